"""The sans-I/O CoAP codec byte by byte (RFC 7252 section 3, appendix A), and against aiocoap."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiocoap import Message as AioMessage
from aiocoap import numbers as aio_numbers
from aiocoap.optiontypes import BlockOption, OpaqueOption
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.coap.message import (
    REGISTRY,
    Block,
    Code,
    Format,
    Message,
    MessageFormatError,
    OptionNumber,
    Type,
    UnsupportedVersion,
    bad_option,
    build,
    code_text,
    decode,
    decode_block,
    decode_uint,
    empty,
    encode,
    encode_block,
    encode_uint,
    is_critical,
    is_no_cache_key,
    is_unsafe,
    option,
    value_problem,
)

Opt = OptionNumber


def both_ways(message: Message, hex_: str) -> None:
    data = bytes.fromhex(hex_.replace(" ", ""))
    assert encode(message) == data
    assert decode(data) == message


# --- appendix A and hand-computed encodings ---------------------------------------------------


def test_appendix_a_get_and_piggybacked_response() -> None:
    request = build(Type.CON, Code.GET, 0x7D34, options=[option(Opt.URI_PATH, "temperature")])
    both_ways(request, "40 01 7d 34 bb 74656d7065726174757265")
    assert request.uri_path == "/temperature"
    response = build(Type.ACK, Code.CONTENT, 0x7D34, payload=b"22.3 C")
    both_ways(response, "60 45 7d 34 ff 32322e332043")


def test_appendix_a_with_token_and_empty_messages() -> None:
    request = build(Type.CON, Code.GET, 0x7D34, b"\x20", [option(Opt.URI_PATH, "temperature")])
    both_ways(request, "41 01 7d 34 20 bb 74656d7065726174757265")
    both_ways(build(Type.ACK, Code.CONTENT, 0x7D34, b"\x20", payload=b"22.3 C"),
              "61 45 7d 34 20 ff 32322e332043")  # fmt: skip
    both_ways(empty(Type.ACK, 0x7D34), "60 00 7d 34")
    both_ways(empty(Type.RST, 0x7D34), "70 00 7d 34")
    both_ways(empty(Type.CON, 0x0001), "40 00 00 01")  # a ping


def test_several_options_use_deltas_in_number_order() -> None:
    # Uri-Path "v1", "devices" (11, 11), Content-Format 50 (12), Uri-Query "p=x" (15),
    # given out of order: the encoder sorts stably, keeping the path segments' order.
    message = build(
        Type.NON,
        Code.POST,
        0x1234,
        b"\xaa\xbb",
        [
            option(Opt.URI_QUERY, "p=x"),
            option(Opt.URI_PATH, "v1"),
            option(Opt.CONTENT_FORMAT, 50),
            option(Opt.URI_PATH, "devices"),
        ],
        b"{}",
    )
    both_ways(message, "52 02 1234 aabb b2 7631 07 64657669636573 11 32 33 703d78 ff 7b7d")
    assert message.uri_path == "/v1/devices"
    assert message.content_format == 50
    assert message.uri_query == ["p=x"]


@pytest.mark.parametrize(
    ("number", "length", "header"),
    [
        (12, 12, "cc"),  # both nibbles direct
        (13, 13, "dd 00 00"),  # 13 -> nibble 13 and an extra byte 0
        (60, 2, "d2 2f"),  # Size1: delta 60 = 13 + 47
        (268, 268, "dd ff ff"),  # the largest 1-byte extension
        (269, 269, "ee 0000 0000"),  # the smallest 2-byte extension
        (300, 300, "ee 001f 001f"),
        (65535, 0, "e0 fef2"),  # the largest option number
    ],
)
def test_extended_delta_and_length(number: int, length: int, header: str) -> None:
    value = bytes(range(256)) * 2
    message = build(Type.CON, Code.GET, 0, options=[(number, value[:length])])
    both_ways(message, "40 01 0000" + header + value[:length].hex())


def test_uint_values_are_minimal_and_leading_zeros_are_read() -> None:
    assert encode_uint(0) == b""
    assert encode_uint(1) == b"\x01"
    assert encode_uint(255) == b"\xff"
    assert encode_uint(256) == b"\x01\x00"
    assert encode_uint(0xFFFFFF) == b"\xff\xff\xff"
    assert encode_uint(1 << 32) == b"\x01\x00\x00\x00\x00"
    assert decode_uint(b"\x00\x00\x01") == 1
    assert decode_uint(b"") == 0
    with pytest.raises(ValueError):
        encode_uint(-1)
    both_ways(
        build(Type.CON, Code.GET, 1, options=[(Opt.OBSERVE, b"\x00\x05")]), "40 01 0001 62 0005"
    )


@pytest.mark.parametrize(
    ("block", "raw"),
    [
        (Block(0, False, 0), ""),
        (Block(0, True, 6), "0e"),
        (Block(1, False, 2), "12"),
        (Block(15, True, 6), "fe"),
        (Block(16, False, 6), "0106"),
        (Block(4095, True, 4), "fffc"),
        (Block(4096, False, 0), "010000"),
        (Block((1 << 20) - 1, True, 5), "fffffd"),
    ],
)
def test_block_values(block: Block, raw: str) -> None:
    assert encode_block(block) == bytes.fromhex(raw)
    assert decode_block(bytes.fromhex(raw)) == block
    assert block.size == 16 << block.szx
    assert block.offset == block.num * block.size


def test_block_value_limits() -> None:
    with pytest.raises(ValueError, match="SZX 7"):
        decode_block(b"\x0f")
    with pytest.raises(ValueError):
        decode_block(b"\x00\x00\x00\x01")
    with pytest.raises(ValueError):
        encode_block(Block(1 << 20, False, 0))
    with pytest.raises(ValueError):
        encode_block(Block(0, False, 7))
    message = build(Type.CON, Code.GET, 0, options=[(Opt.BLOCK2, b"\x0f")])
    with pytest.raises(ValueError):
        _ = message.block2


def test_option_bits_and_registry() -> None:
    assert [n for n in REGISTRY if is_critical(n)] == [1, 3, 5, 7, 11, 15, 17, 23, 27, 35, 39]
    assert [n for n in REGISTRY if is_unsafe(n)] == [3, 6, 7, 11, 14, 15, 23, 27, 35, 39]
    assert [n for n in REGISTRY if is_no_cache_key(n)] == [28, 60]
    assert REGISTRY[Opt.PROXY_URI].max_length == 1034
    assert REGISTRY[Opt.URI_PATH].name == "Uri-Path"
    assert code_text(Code.CONTENT) == "2.05"
    assert code_text(Code.CONTINUE) == "2.31"
    assert code_text(Code.REQUEST_ENTITY_TOO_LARGE) == "4.13"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_", "reason", "rst"),
    [
        ("", "shorter than the header", False),
        ("40 01 00", "shorter than the header", False),
        ("80 01 0001", "version 2", False),
        ("49 01 0001 000000000000000000", "token length 9", True),
        ("42 01 0001 aa", "token is cut off", True),
        ("41 00 0001 aa", "Empty message", True),
        ("60 00 0001 ff", "Empty message", False),
        ("50 00 0001", "never Empty", False),
        ("40 20 0001", "reserved class", True),
        ("50 c1 0001", "reserved class", False),
        ("70 45 0001", "Reset is Empty", False),
        ("60 01 0001", "carries no request", False),
        ("40 01 0001 ff", "no payload", True),
        ("40 01 0001 f1 00", "delta nibble 15", True),
        ("40 01 0001 1f", "length nibble 15", True),
        ("40 01 0001 d0", "1-byte extended option delta", True),
        ("40 01 0001 e0 01", "2-byte extended option delta", True),
        ("40 01 0001 1d", "1-byte extended option length", True),
        ("40 01 0001 13 6162", "value of option 1 is cut off", True),
        ("40 01 0001 e0 fef2 e0 0000", "above 65535", True),
    ],
)
def test_malformed_datagrams_are_refused_with_a_reason(hex_: str, reason: str, rst: bool) -> None:
    with pytest.raises(MessageFormatError, match=reason) as caught:
        decode(bytes.fromhex(hex_.replace(" ", "")))
    reply = caught.value.reply()
    assert (reply == empty(Type.RST, 1)) if rst else reply is None


def test_an_unknown_version_is_ignored_even_when_confirmable() -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        decode(bytes.fromhex("c0010001"))
    assert caught.value.reply() is None


def test_option_problems_of_critical_options_only() -> None:
    def problem(*options: tuple[int, bytes]) -> str | None:
        return bad_option(build(Type.CON, Code.GET, 1, options=options))

    assert problem(option(Opt.URI_PATH, "a"), option(Opt.URI_PATH, "b")) is None
    assert problem((9, b"x")) == "option 9 is not recognised"
    assert problem((2, b"x")) is None  # unknown but elective: ignored
    assert problem((Opt.URI_HOST, b"")) == "Uri-Host has 0 bytes, outside 1..255"
    assert problem((Opt.URI_PATH, b"\xff")) == "Uri-Path is not UTF-8"
    assert problem((Opt.URI_PORT, b"\x01\x02\x03")) == "Uri-Port has 3 bytes, outside 0..2"
    assert problem((Opt.URI_HOST, b"a"), (Opt.URI_HOST, b"b")) == "Uri-Host is not repeatable"
    assert problem((Opt.CONTENT_FORMAT, b"\x01\x02\x03")) is None  # elective: ignored
    assert problem((Opt.IF_NONE_MATCH, b"x")) == "If-None-Match has 1 bytes, outside 0..0"
    assert problem(option(Opt.BLOCK1, Block(2, True, 6))) is None


# --- generated messages -----------------------------------------------------------------------

option_numbers = st.one_of(st.sampled_from(sorted(REGISTRY)), st.integers(0, 65535))
options = st.lists(st.tuples(option_numbers, st.binary(max_size=300)), max_size=8).map(
    lambda items: tuple(sorted(items, key=lambda item: item[0]))
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    type_ = draw(st.sampled_from(Type))
    mid = draw(st.integers(0, 0xFFFF))
    if type_ is Type.RST or (type_ is not Type.NON and draw(st.booleans()) and draw(st.booleans())):
        return empty(type_, mid)
    requests = st.integers(1, 31)
    responses = st.integers(2 << 5, (2 << 5) + 31) | st.integers(4 << 5, (5 << 5) + 31)
    code = draw(responses if type_ is Type.ACK else requests | responses)
    return Message(
        type_,
        code,
        mid,
        draw(st.binary(max_size=8)),
        draw(options),
        draw(st.binary(max_size=64)),
    )


def valid_cuts(message: Message, data: bytes) -> set[int]:
    """The prefix lengths that are valid datagrams themselves (CoAP has no length field)."""
    if message.code == Code.EMPTY:
        return {4}
    cuts = {4 + len(message.token)}
    pos = 4 + len(message.token)
    previous = 0
    for number, value in message.options:
        encoded = encode(Message(Type.CON, Code.GET, 0, b"", ((number - previous, value),)))
        pos += len(encoded) - 4
        cuts.add(pos)
        previous = number
    if message.payload:
        cuts.update(range(pos + 2, len(data) + 1))
    return cuts


@settings(max_examples=300, deadline=None)
@given(messages())
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode(data) == message
    assert encode(decode(data)) == data


@settings(max_examples=300, deadline=None)
@given(messages())
def test_every_prefix_is_refused_unless_it_ends_on_a_field_boundary(message: Message) -> None:
    data = encode(message)
    cuts = valid_cuts(message, data)
    for length in range(len(data)):
        prefix = data[:length]
        try:
            decoded = decode(prefix)
        except MessageFormatError as error:
            assert error.reason
            assert length not in cuts, f"prefix of {length} bytes refused: {error.reason}"
        else:
            assert length in cuts, f"prefix of {length} bytes accepted"
            assert encode(decoded) == prefix


@settings(max_examples=500, deadline=None)
@given(
    messages(),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("rid")), max_size=4
    ),
)
def test_mutations_decode_exactly_or_are_refused_with_a_reason(
    message: Message, edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(encode(message))
    for where, byte, how in edits:
        index = where % (len(data) + 1)
        if how == "i":
            data.insert(index, byte)
        elif data and how == "r":
            data[index % len(data)] = byte
        elif data:
            del data[index % len(data)]
    try:
        decoded = decode(bytes(data))
    except MessageFormatError as error:
        assert error.reason
    else:
        assert encode(decoded) == bytes(data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=40))
def test_random_datagrams_never_raise_anything_else(data: bytes) -> None:
    try:
        decoded = decode(data)
    except MessageFormatError as error:
        assert error.reason
    else:
        assert encode(decoded) == data
        bad_option(decoded)  # never raises either


# --- interoperability with aiocoap (encode on one side, decode on the other) -----------------

AIO = aio_numbers.codes.Code
AIO_TYPE = aio_numbers.types.Type


def aio_messages() -> list[AioMessage]:
    out = []
    plain = AioMessage(mtype=AIO_TYPE.CON, code=AIO.GET, mid=0x7D34, token=b"\x20")
    plain.opt.uri_path = ("temperature",)
    out.append(plain)
    post = AioMessage(
        mtype=AIO_TYPE.NON, code=AIO.POST, mid=7, token=b"tok12345", payload=b'{"t":1}'
    )
    post.opt.uri_path = ("v1", "devices", "d-1", "datas")
    post.opt.uri_query = ("p=hmac-sha256:1700000000:abcd",)
    post.opt.content_format = 50
    post.opt.block1 = BlockOption.BlockwiseTuple(3, True, 6)
    post.opt.size1 = 70000
    out.append(post)
    observe = AioMessage(mtype=AIO_TYPE.CON, code=AIO.GET, mid=65535, token=b"\x01\x02")
    observe.opt.uri_path = ("v1", "devices", "d-1", "command")
    observe.opt.observe = 0
    observe.opt.accept = 50
    observe.opt.uri_host = "edge.example"
    observe.opt.uri_port = 15683
    out.append(observe)
    notification = AioMessage(
        mtype=AIO_TYPE.NON, code=AIO.CONTENT, mid=300, token=b"\x01\x02", payload=b"x" * 1024
    )
    notification.opt.observe = 0xFFFFFF
    notification.opt.block2 = BlockOption.BlockwiseTuple(0, True, 6)
    notification.opt.size2 = 5000
    notification.opt.max_age = 3600
    notification.opt.etag = b"\x00\x01"
    out.append(notification)
    bad = AioMessage(
        mtype=AIO_TYPE.ACK, code=AIO.BAD_OPTION, mid=1, payload=b"Uri-Host has 0 bytes"
    )
    out.append(bad)
    created = AioMessage(mtype=AIO_TYPE.ACK, code=AIO.CREATED, mid=2, token=b"\xff")
    created.opt.location_path = ("a", "b")
    created.opt.location_query = ("q=1",)
    created.opt.add_option(OpaqueOption(2000, b"\x00" * 300))
    created.opt.proxy_uri = "coap://example.net/" + "x" * 600
    out.append(created)
    for type_ in (AIO_TYPE.ACK, AIO_TYPE.RST, AIO_TYPE.CON):
        out.append(AioMessage(mtype=type_, code=AIO.EMPTY, mid=42))
    return out


def wire_options(message: AioMessage) -> list[tuple[int, bytes]]:
    return [(int(item.number), item.encode()) for item in message.opt.option_list()]


# Test ids without the object's address, so that every pytest-xdist worker collects the same.
@pytest.mark.parametrize("theirs", aio_messages(), ids=lambda m: repr(m).partition(": ")[2][:44])
def test_aiocoap_encodes_what_we_decode_and_the_reverse(theirs: AioMessage) -> None:
    data = theirs.encode()
    ours = decode(data)
    assert encode(ours) == data
    assert ours.type == int(theirs.mtype)
    assert ours.code == int(theirs.code)
    assert ours.mid == theirs.mid
    assert ours.token == theirs.token
    assert ours.payload == theirs.payload
    assert ours.uri_path == "/" + "/".join(theirs.opt.uri_path)
    assert ours.observe == theirs.opt.observe
    assert ours.block1 == (tuple(theirs.opt.block1) if theirs.opt.block1 else None)
    assert ours.block2 == (tuple(theirs.opt.block2) if theirs.opt.block2 else None)
    back = AioMessage.decode(encode(ours))
    assert back.encode() == data
    assert wire_options(back) == wire_options(theirs)


def test_our_typed_options_decode_in_aiocoap() -> None:
    message = build(
        Type.CON,
        Code.PUT,
        0xBEEF,
        b"\x00" * 8,
        [
            option(Opt.URI_PATH, "v1"),
            option(Opt.URI_PATH, "devices"),
            option(Opt.URI_QUERY, "p=secret"),
            option(Opt.CONTENT_FORMAT, 60),
            option(Opt.BLOCK1, Block(17, True, 2)),
            option(Opt.BLOCK2, Block(0, False, 5)),
            option(Opt.SIZE1, 1 << 20),
            option(Opt.IF_MATCH, b""),
            option(Opt.IF_NONE_MATCH),
            option(Opt.PROXY_SCHEME, "coap"),
        ],
        b"\x01" * 500,
    )
    theirs = AioMessage.decode(encode(message))
    assert theirs.mtype == AIO_TYPE.CON and theirs.code == AIO.PUT and theirs.mid == 0xBEEF
    assert theirs.opt.uri_path == ("v1", "devices")
    assert theirs.opt.uri_query == ("p=secret",)
    assert theirs.opt.content_format == 60
    assert tuple(theirs.opt.block1) == (17, True, 2)
    assert tuple(theirs.opt.block2) == (0, False, 5)
    assert theirs.opt.size1 == 1 << 20
    assert theirs.opt.if_match == (b"",)
    assert theirs.opt.if_none_match is True
    assert theirs.opt.proxy_scheme == "coap"
    assert theirs.payload == b"\x01" * 500
    assert theirs.encode() == encode(message)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_generated_messages_survive_aiocoap(message: Message) -> None:
    # aiocoap refuses registered options with values out of their format (a string that is
    # not UTF-8, for one) at decoding time, where we report them through bad_option; and it
    # writes uint values back without the leading zeros we keep.
    fine = tuple(
        option(number, decode_uint(value)) if number in UINTS else (number, value)
        for number, value in message.options
        if value_problem(number, value) in (None, unknown((number, value)))
    )
    data = encode(replace(message, options=fine))
    theirs = AioMessage.decode(data)
    assert theirs.mid == message.mid and theirs.token == message.token
    assert theirs.payload == message.payload
    assert theirs.encode() == data
    assert wire_options(theirs) == list(fine)


UINTS = {number for number, spec in REGISTRY.items() if spec.format is Format.UINT}


def unknown(item: tuple[int, bytes]) -> str:
    return f"option {item[0]} is not recognised"
