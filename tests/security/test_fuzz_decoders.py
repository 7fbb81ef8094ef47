"""Every decoder of outside bytes, fuzzed small on each run (`make fuzz` runs 10⁶ cases each;
CI runs `make fuzz FUZZ_CASES=20000` besides, so this one stays a quick smoke run)."""

import pytest

from tests.security import fuzzing

CASES = 5000


@pytest.mark.parametrize(
    "name",
    ["mqtt", "websocket", "envelope", "upload", "coap", "coap-exchange", "http", "jsonlines",
     "udp-json", "frames", "frame-spec"],
)
def test_decoder_keeps_its_contract_on_mutated_input(name, db):
    target = fuzzing.targets()[name]
    assert fuzzing.run(target, max(50, int(CASES * target.weight)), seed=7) > 0


def test_the_fuzzer_reports_a_broken_contract():
    """The harness itself: a decoder that raises an undocumented error is a finding."""

    def check(data, rng):
        if b"\\xff" in data or len(data) > 3:
            raise IndexError("boom")

    target = fuzzing.Target("broken", [b"abcd"], check)
    with pytest.raises(fuzzing.Finding, match="IndexError"):
        fuzzing.run(target, 100)


def test_lone_surrogate_in_a_signed_envelope_is_refused_with_a_reason():
    """Found by the fuzzer: a dataSign holding "\\ud800" crashed the signature check."""
    from edge.codecs.thinglinks import parse

    payload = (b'{"head":{"mid":1,"timeStamp":1},"dataBody":{"devices":[]},'
               b'"dataSign":"\\ud800"}')
    parsed = parse("/v1/devices/dev-1/datas", payload, fuzzing._Keys())
    assert [e.code for e in parsed.errors] == ["malformed_json"]
    assert "surrogate" in parsed.errors[0].reason
