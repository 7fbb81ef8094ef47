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
