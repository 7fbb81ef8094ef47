"""Binary frames: checksum known-answer vectors and the frame MAC."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from edge.frames.checksums import crc16_modbus, crc32, frame_mac, mac_matches, sum8, xor8

CHECK = b"123456789"


@pytest.mark.parametrize(
    ("function", "data", "expected"),
    [
        (crc16_modbus, CHECK, 0x4B37),
        (crc16_modbus, b"", 0xFFFF),
        (crc16_modbus, bytes.fromhex("010300000001"), 0x0A84),  # Modbus "read 1 register": 84 0a
        (crc32, CHECK, 0xCBF43926),
        (crc32, b"", 0),
        (sum8, CHECK, 0xDD),  # 0x31 + … + 0x39 = 477
        (sum8, b"\xff\x02", 0x01),
        (xor8, CHECK, 0x31),
        (xor8, b"\xff\x0f", 0xF0),
    ],
)
def test_known_answers(function: object, data: bytes, expected: int) -> None:
    assert function(data) == expected  # type: ignore[operator]


def test_the_mac_is_hmac_sha256_cut_to_its_size() -> None:
    full = hmac.new(b"s3cret", b"frame", hashlib.sha256).digest()
    assert frame_mac("s3cret", b"frame", 8) == full[:8]
    assert frame_mac("s3cret", b"frame", 32) == full


def test_mac_matches_good_bad_and_truncated() -> None:
    mac = frame_mac("s3cret", b"frame", 8)
    assert mac_matches("s3cret", b"frame", mac, 8)
    assert not mac_matches("other", b"frame", mac, 8)
    assert not mac_matches("s3cret", b"framE", mac, 8)
    assert not mac_matches("s3cret", b"frame", bytes([mac[0] ^ 1]) + mac[1:], 8)
    assert not mac_matches("s3cret", b"frame", mac[:7], 8)
    assert not mac_matches("s3cret", b"frame", b"", 8)
