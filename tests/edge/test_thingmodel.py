"""Validation of uplink values against a thing model (edge.thingmodel)."""

import pytest

from edge.thingmodel import ThingModel

MODEL = {
    "services": {
        "env": {
            "properties": {
                "temperature": {"datatype": "decimal", "min": -40, "max": 125},
                "count": {"datatype": "int", "min": 0},
                "big": {"datatype": "bigint"},
                "label": {"datatype": "string", "max_length": 5},
                "on": {"datatype": "bool"},
                "at": {"datatype": "datetime"},
                "extra": {"datatype": "json"},
                "blob": {"datatype": "binary", "max_length": 3},
                "mode": {"datatype": "enum", "enum": ["auto", "manual"]},
            },
            "commands": {
                "set_interval": {
                    "requests": {"seconds": {"datatype": "int", "min": 1, "max": 3600,
                                             "required": True}},
                    "responses": {"result": {"datatype": "string"}},
                }
            },
            "events": {"overheat": {"params": {"level": {"datatype": "int", "required": True}}}},
        }
    }
}


@pytest.fixture
def model():
    return ThingModel.from_json(MODEL)


def test_valid_values_are_normalised(model):
    """Every datatype accepts its values and normalises them."""
    accepted, problems = model.validate_service_data("env", {
        "temperature": 25, "count": 3.0, "big": 2**40, "label": "abc", "on": 1,
        "at": "2024-01-01T00:00:00Z", "extra": {"a": [1]}, "blob": "AAEC", "mode": "auto",
    })
    assert problems == []
    assert accepted == {
        "temperature": 25.0, "count": 3, "big": 2**40, "label": "abc", "on": True,
        "at": 1704067200000, "extra": {"a": [1]}, "blob": "AAEC", "mode": "auto",
    }


@pytest.mark.parametrize(("data", "code", "fragment"), [
    ({"temperature": 500}, "out_of_range", "temperature=500 is above max 125"),
    ({"temperature": -41}, "out_of_range", "below min -40"),
    ({"temperature": "hot"}, "wrong_type", "must be a number"),
    ({"temperature": True}, "wrong_type", "must be a number"),
    ({"count": 1.5}, "wrong_type", "must be an integer"),
    ({"count": 2**31}, "out_of_range", "does not fit the int type"),
    ({"label": "toolong"}, "too_long", "7 characters, max 5"),
    ({"on": "yes"}, "wrong_type", "boolean"),
    ({"at": "yesterday"}, "wrong_type", "a time"),
    ({"blob": "!!"}, "wrong_type", "base64"),
    ({"blob": "AAECAw=="}, "too_long", "4 bytes, max 3"),
    ({"mode": "off"}, "not_in_enum", "'off' is not one of 'auto', 'manual'"),
    ({"humidity": 3}, "unknown_property", "unknown property 'humidity'"),
])
def test_bad_values_are_refused_with_a_reason(model, data, code, fragment):
    """A bad value yields a problem naming the property and why."""
    accepted, problems = model.validate_service_data("env", data)
    assert accepted == {}
    assert [p.code for p in problems] == [code]
    assert fragment in problems[0].reason
    assert problems[0].service == "env"


def test_good_values_survive_bad_neighbours(model):
    """Partial acceptance: valid properties land even when others in the message fail."""
    accepted, problems = model.validate_service_data(
        "env", {"temperature": 21.5, "humidity": 3, "count": -1})
    assert accepted == {"temperature": 21.5}
    assert sorted(p.code for p in problems) == ["out_of_range", "unknown_property"]


def test_unknown_service_and_non_object(model):
    """Unknown services and non-object data are refused as a whole."""
    assert model.validate_service_data("nope", {})[1][0].code == "unknown_service"
    assert model.validate_service_data("env", [1, 2])[1][0].code == "wrong_type"


def test_command_params_enforce_required(model):
    """Command requests are validated, and required parameters must be present."""
    assert model.validate_command_params("env", "set_interval", {"seconds": 10}) == (
        {"seconds": 10}, [])
    _, problems = model.validate_command_params("env", "set_interval", {})
    assert [p.code for p in problems] == ["missing_required"]
    _, problems = model.validate_command_params("env", "reboot", {})
    assert problems[0].code == "unknown_command"
    accepted, problems = model.validate_command_params(
        "env", "set_interval", {"result": "ok"}, response=True)
    assert (accepted, problems) == ({"result": "ok"}, [])


def test_events(model):
    """Event parameters are typed and required ones enforced."""
    assert model.validate_event("env", "overheat", {"level": 2}) == ({"level": 2}, [])
    assert model.validate_event("env", "overheat", {})[1][0].code == "missing_required"
    assert model.validate_event("env", "boom", {})[1][0].code == "unknown_event"


def test_malformed_models_are_refused():
    """A model with an unknown datatype or without services cannot be loaded."""
    with pytest.raises(ValueError):
        ThingModel.from_json({"services": {"s": {"properties": {"p": {"datatype": "float"}}}}})
    with pytest.raises(ValueError):
        ThingModel.from_json({"nope": 1})


# --- the fast path for plain numbers ---------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge import thingmodel  # noqa: E402

_BOUNDS = st.one_of(st.none(), st.integers(-(2**40), 2**40), st.floats(-1e12, 1e12))
_VALUES = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.text(max_size=3), st.none())


def _full_check(spec, value):
    """What `check` decides without the fast path."""
    try:
        return thingmodel._CHECKERS[spec.datatype](spec, value), None
    except thingmodel._Refused as refused:
        return None, (refused.code, refused.reason)


@given(st.sampled_from(["decimal", "int", "bigint"]), _BOUNDS, _BOUNDS, _VALUES)
def test_fast_path_decides_as_the_full_check(datatype, low, high, value):
    """A number the fast path accepts is accepted by the full check with the same value and
    type; anything else goes to the full check (so refusals keep their reasons)."""
    spec = thingmodel.FieldSpec.from_json("p", {"datatype": datatype, "min": low, "max": high})
    fast = thingmodel._fast_number(spec, value)
    full, problem = _full_check(spec, value)
    if fast is not None:
        assert problem is None
        assert fast == full and type(fast) is type(full)
    got, got_problem = spec.check(value, "svc")
    assert got == full and type(got) is type(full)
    assert (got_problem and (got_problem.code, got_problem.reason)) == (problem or None)


def test_fast_path_refuses_what_it_must_not_decide(model):
    """Booleans, NaN, infinities and integers too wide for a double are not numbers in range;
    they reach the full check and are refused with its reason (an integer too large for a
    double used to escape as an OverflowError)."""
    spec = model.services["env"].properties["temperature"]
    for value in (True, float("nan"), float("inf"), 10**400):
        assert thingmodel._fast_number(spec, value) is None
    values, problems = model.validate_service_data("env", {"temperature": 10**400})
    assert values == {}
    assert problems[0].reason.startswith("temperature must be a finite number")


def test_json_values_with_a_nul_character_are_refused(model):
    """PostgreSQL's jsonb cannot hold U+0000 (and would refuse the whole batch): the edge
    refuses it with a reason; an escaped backslash-u text is an ordinary string."""
    values, problems = model.validate_service_data(
        "env", {"extra": {"a": ["ok", {"k\x00": 1}]}, "temperature": 20})
    assert values == {"temperature": 20.0}
    assert problems[0].property == "extra" and "NUL" in problems[0].reason
    values, problems = model.validate_service_data("env", {"extra": {"a": "\\u0000"}})
    assert values == {"extra": {"a": "\\u0000"}} and problems == []
