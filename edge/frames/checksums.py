"""Checksums and the frame MAC: the integrity checks a codec may declare over a byte range.

A checksum catches a damaged frame; the MAC (HMAC-SHA256 keyed with the device secret, cut to
the size the codec declares) proves the frame came from the device that knows the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Callable


def _crc16_modbus_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_modbus_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: reflected polynomial 0x8005, initial 0xFFFF, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC16_TABLE[(crc ^ byte) & 0xFF]
    return crc


def crc32(data: bytes) -> int:
    """CRC-32 as zip and Ethernet compute it (ISO-HDLC)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def sum8(data: bytes) -> int:
    """The sum of the bytes modulo 256."""
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    """The bytes xor-ed together."""
    result = 0
    for byte in data:
        result ^= byte
    return result


# name in a codec description → (size in bytes, function)
CHECKSUMS: dict[str, tuple[int, Callable[[bytes], int]]] = {
    "crc16-modbus": (2, crc16_modbus),
    "crc32": (4, crc32),
    "sum8": (1, sum8),
    "xor8": (1, xor8),
}

MAC_ALGORITHMS = ("hmac-sha256",)
MAC_MIN_SIZE, MAC_MAX_SIZE = 4, 32


def frame_mac(secret: str, data: bytes, size: int) -> bytes:
    """HMAC-SHA256 of ``data`` keyed with the device secret (UTF-8), its first ``size`` bytes."""
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()[:size]


def mac_matches(secret: str, data: bytes, mac: bytes, size: int) -> bool:
    """Whether ``mac`` is the ``size``-byte frame MAC of ``data`` (compared in constant time;
    a shorter ``mac`` never matches)."""
    return len(mac) == size and hmac.compare_digest(frame_mac(secret, data, size), mac)
