"""The CoAP message layer as a pure state machine, driven with datagrams and a fake clock."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from edge.coap.exchange import (
    EXCHANGE_LIFETIME,
    NON_LIFETIME,
    DeliveryFailed,
    Endpoint,
    ObservationEnded,
    Output,
    Refused,
    Request,
    Response,
    Transmit,
)
from edge.coap.message import Block, Code, Message, Type, build, decode, empty, encode, option
from edge.coap.message import OptionNumber as Opt

PEER = ("192.0.2.1", 5683)
OTHER = ("192.0.2.2", 5683)
DATAS = (option(Opt.URI_PATH, "v1"), option(Opt.URI_PATH, "datas"))
COMMAND = (option(Opt.URI_PATH, "v1"), option(Opt.URI_PATH, "command"))


def endpoint(**budgets: int) -> Endpoint:
    """rng 0: message ids start at 0, the first timeout is exactly ACK_TIMEOUT (2 s)."""
    return Endpoint(rng=lambda: 0.0, **budgets)


def datagram(
    type_: Type,
    mid: int,
    code: int = Code.GET,
    token: bytes = b"tk",
    options: Iterable[tuple[int, bytes]] = DATAS,
    payload: bytes = b"",
) -> bytes:
    return encode(build(type_, code, mid, token, options, payload))


def sent(outputs: list[Output]) -> list[Message]:
    """The messages to send, decoded from the bytes the transport would write."""
    return [decode(item.data) for item in outputs if isinstance(item, Transmit)]


def only_sent(outputs: list[Output]) -> Message:
    messages = sent(outputs)
    assert len(messages) == 1, outputs
    return messages[0]


def request(outputs: list[Output]) -> Request:
    found = [item for item in outputs if isinstance(item, Request)]
    assert len(found) == 1, outputs
    return found[0]


# --- requests, answers and deduplication ------------------------------------------------------


def test_a_confirmable_request_gets_a_piggybacked_ack() -> None:
    ep = endpoint()
    got = request(ep.receive(PEER, datagram(Type.CON, 0x1234, Code.POST, payload=b"{}"), 0.0))
    assert got.peer == PEER and got.body == b"{}" and got.token == b"tk"
    assert got.message.uri_path == "/v1/datas"
    reply = only_sent(ep.respond(got, Response(Code.CHANGED, b'{"ok":1}'), 0.1))
    assert reply == build(Type.ACK, Code.CHANGED, 0x1234, b"tk", payload=b'{"ok":1}')
    with pytest.raises(ValueError):
        ep.respond(got, Response(Code.CHANGED), 0.2)


def test_a_duplicate_confirmable_request_gets_the_cached_answer_until_the_lifetime_ends() -> None:
    ep = endpoint()
    data = datagram(Type.CON, 7, Code.POST, payload=b"x")
    first = request(ep.receive(PEER, data, 0.0))
    assert isinstance(ep.receive(PEER, data, 1.0)[0], Refused)  # not answered yet: dropped
    ack = ep.respond(first, Response(Code.CHANGED, b"done"), 1.5)
    again = ep.receive(PEER, data, 200.0)
    assert sent(again) == sent(ack)
    assert not [item for item in again if isinstance(item, Request)]
    assert ep.receive(OTHER, data, 200.0)[0].peer == OTHER  # the same id of another peer is new
    request(ep.receive(PEER, data, EXCHANGE_LIFETIME + 0.1))  # forgotten: a new request


def test_a_duplicate_non_confirmable_request_is_dropped_for_non_lifetime() -> None:
    ep = endpoint()
    data = datagram(Type.NON, 9, Code.POST, payload=b"x")
    first = request(ep.receive(PEER, data, 0.0))
    answer = only_sent(ep.respond(first, Response(Code.CHANGED), 0.0))
    assert answer.type is Type.NON and answer.mid == 0 and answer.token == b"tk"
    assert [type(item) for item in ep.receive(PEER, data, NON_LIFETIME - 1)] == [Refused]
    request(ep.receive(PEER, data, NON_LIFETIME + 0.1))
    second = request(ep.receive(PEER, datagram(Type.NON, 10), NON_LIFETIME + 0.2))
    assert only_sent(ep.respond(second, Response(Code.CONTENT), NON_LIFETIME + 0.2)).mid == 1


def test_the_layer_answers_pings_format_errors_and_stray_responses() -> None:
    ep = endpoint()
    assert only_sent(ep.receive(PEER, encode(empty(Type.CON, 5)), 0.0)) == empty(Type.RST, 5)
    refused = ep.receive(PEER, bytes.fromhex("4201000aaa"), 0.0)  # CON with a cut token
    assert isinstance(refused[0], Refused) and "token" in refused[0].reason
    assert only_sent(refused) == empty(Type.RST, 10)
    assert sent(ep.receive(PEER, bytes.fromhex("5201000aaa"), 0.0)) == []  # NON: dropped
    assert sent(ep.receive(PEER, bytes.fromhex("80010001"), 0.0)) == []  # version 2: ignored
    stray = datagram(Type.CON, 11, Code.CONTENT, options=())
    assert only_sent(ep.receive(PEER, stray, 0.0)) == empty(Type.RST, 11)
    assert sent(ep.receive(PEER, datagram(Type.NON, 12, Code.CONTENT, options=()), 0.0)) == []
    assert ep.receive(PEER, encode(empty(Type.ACK, 99)), 0.0) == []  # settles nothing


def test_a_bad_critical_option_gets_4_02_and_an_unknown_elective_one_is_ignored() -> None:
    ep = endpoint()
    data = datagram(Type.CON, 1, options=[*DATAS, (9, b"x")])
    reply = only_sent(ep.receive(PEER, data, 0.0))
    assert (reply.type, reply.code, reply.mid) == (Type.ACK, Code.BAD_OPTION, 1)
    assert reply.payload == b"option 9 is not recognised"
    assert only_sent(ep.receive(PEER, data, 1.0)) == reply  # cached for the duplicate
    request(ep.receive(PEER, datagram(Type.CON, 2, options=[*DATAS, (2, b"x")]), 0.0))
    non = only_sent(ep.receive(PEER, datagram(Type.NON, 3, options=[(Opt.URI_HOST, b"")]), 0.0))
    assert (non.type, non.code, non.token) == (Type.NON, Code.BAD_OPTION, b"tk")
    szx7 = only_sent(ep.receive(PEER, datagram(Type.CON, 4, options=[(Opt.BLOCK2, b"\x0f")]), 0))
    assert szx7.code == Code.BAD_REQUEST and b"SZX 7" in szx7.payload


# --- Block1 -----------------------------------------------------------------------------------


def block1(num: int, more: bool, szx: int, *extra: tuple[int, bytes]) -> list[tuple[int, bytes]]:
    return [*DATAS, option(Opt.BLOCK1, Block(num, more, szx)), *extra]


def test_block1_reassembles_a_body_with_2_31_continue() -> None:
    ep = endpoint()
    parts = [bytes([n]) * 64 for n in range(3)] + [b"end"]
    for num, part in enumerate(parts[:-1]):
        data = datagram(Type.CON, 100 + num, Code.POST, options=block1(num, True, 2), payload=part)
        reply = only_sent(ep.receive(PEER, data, float(num)))
        assert (reply.type, reply.code, reply.mid) == (Type.ACK, Code.CONTINUE, 100 + num)
        assert reply.block1 == Block(num, True, 2)
    assert ep.transfers == 1
    last = datagram(Type.CON, 103, Code.POST, options=block1(3, False, 2), payload=b"end")
    whole = request(ep.receive(PEER, last, 3.0))
    assert whole.body == b"".join(parts)
    assert ep.transfers == 0
    reply = only_sent(ep.respond(whole, Response(Code.CHANGED, b"ok"), 3.0))
    assert reply.code == Code.CHANGED and reply.block1 == Block(3, False, 2)


def test_block1_asks_for_smaller_blocks_and_follows_the_offset() -> None:
    ep = Endpoint(rng=lambda: 0.0, preferred_szx=2)  # 64-byte blocks
    first = datagram(Type.CON, 1, Code.PUT, options=block1(0, True, 6), payload=b"a" * 1024)
    assert only_sent(ep.receive(PEER, first, 0.0)).block1 == Block(0, True, 2)
    # The client goes on with 64-byte blocks: the next one is block 16 (offset 1024).
    last = datagram(Type.CON, 2, Code.PUT, options=block1(16, False, 2), payload=b"b" * 10)
    assert request(ep.receive(PEER, last, 0.1)).body == b"a" * 1024 + b"b" * 10


def test_block1_out_of_order_or_without_its_start_is_incomplete() -> None:
    ep = endpoint()
    start = datagram(Type.CON, 1, Code.POST, options=block1(0, True, 0), payload=b"x" * 16)
    only_sent(ep.receive(PEER, start, 0.0))
    skip = datagram(Type.CON, 2, Code.POST, options=block1(2, True, 0), payload=b"x" * 16)
    assert only_sent(ep.receive(PEER, skip, 0.1)).code == Code.REQUEST_ENTITY_INCOMPLETE
    assert ep.transfers == 0  # the broken transfer is dropped
    orphan = datagram(Type.CON, 3, Code.POST, options=block1(1, False, 0), payload=b"x")
    assert only_sent(ep.receive(PEER, orphan, 0.2)).code == Code.REQUEST_ENTITY_INCOMPLETE
    short = datagram(Type.CON, 4, Code.POST, options=block1(0, True, 1), payload=b"x" * 31)
    assert only_sent(ep.receive(PEER, short, 0.3)).code == Code.BAD_REQUEST


def test_bodies_past_the_limit_get_4_13_with_size1() -> None:
    ep = Endpoint(rng=lambda: 0.0, max_body=100)
    announced = block1(0, True, 2, option(Opt.SIZE1, 101))
    reply = only_sent(
        ep.receive(PEER, datagram(Type.CON, 1, Code.POST, options=announced, payload=b"x" * 64), 0)
    )
    assert reply.code == Code.REQUEST_ENTITY_TOO_LARGE and reply.uint(Opt.SIZE1) == 100
    for num in range(2):
        data = datagram(
            Type.CON, 2 + num, Code.POST, options=block1(num, True, 2), payload=b"x" * 64
        )
        codes = [m.code for m in sent(ep.receive(PEER, data, 1.0))]
    assert codes == [Code.REQUEST_ENTITY_TOO_LARGE]
    assert ep.transfers == 0
    whole = datagram(Type.NON, 9, Code.POST, payload=b"x" * 101)
    reply = only_sent(ep.receive(PEER, whole, 2.0))
    assert (reply.type, reply.code, reply.uint(Opt.SIZE1)) == (
        Type.NON,
        Code.REQUEST_ENTITY_TOO_LARGE,
        100,
    )


def test_block1_transfers_are_bounded_per_peer_and_overall() -> None:
    ep = endpoint(max_transfers_per_peer=1, max_transfers=2)

    def start(peer: tuple[str, int], mid: int, path: str) -> int:
        options = [option(Opt.URI_PATH, path), option(Opt.BLOCK1, Block(0, True, 0))]
        data = datagram(Type.CON, mid, Code.POST, options=options, payload=b"x" * 16)
        return only_sent(ep.receive(peer, data, 0.0)).code

    assert start(PEER, 1, "a") == Code.CONTINUE
    assert start(PEER, 2, "b") == Code.SERVICE_UNAVAILABLE
    assert start(OTHER, 1, "a") == Code.CONTINUE
    assert start(("192.0.2.3", 1), 1, "a") == Code.SERVICE_UNAVAILABLE
    ep.poll(EXCHANGE_LIFETIME + 1)  # unfinished transfers expire
    assert ep.transfers == 0
    assert start(PEER, 3, "b") == Code.CONTINUE


# --- Block2 -----------------------------------------------------------------------------------

BIG = bytes(range(256)) * 9 + b"tail"  # 2308 bytes


def get_block(
    ep: Endpoint, peer: object, mid: int, num: int, szx: int, now: float = 0.0
) -> list[Output]:
    options = [*COMMAND, option(Opt.BLOCK2, Block(num, False, szx))]
    return ep.receive(peer, datagram(Type.CON, mid, options=options), now)


def test_a_large_response_is_sliced_and_later_blocks_come_from_the_kept_body() -> None:
    ep = endpoint()
    first = request(ep.receive(PEER, datagram(Type.CON, 1, options=COMMAND), 0.0))
    reply = only_sent(ep.respond(first, Response(Code.CONTENT, BIG, (option(Opt.ETAG, b"e1"),)), 0))
    assert reply.block2 == Block(0, True, 6) and reply.uint(Opt.SIZE2) == len(BIG)
    assert reply.payload == BIG[:1024] and reply.first(Opt.ETAG) == b"e1"
    second = only_sent(get_block(ep, PEER, 2, 1, 6))  # no Request: the layer answers
    assert (second.mid, second.block2, second.payload) == (2, Block(1, True, 6), BIG[1024:2048])
    assert second.first(Opt.ETAG) == b"e1" and second.uint(Opt.SIZE2) is None
    third = only_sent(get_block(ep, PEER, 3, 2, 6))
    assert (third.block2, third.payload) == (Block(2, False, 6), BIG[2048:])
    beyond = only_sent(get_block(ep, PEER, 4, 3, 6))
    assert beyond.code == Code.BAD_OPTION


def test_a_smaller_block_size_asked_by_the_client_is_honoured() -> None:
    ep = endpoint()
    first = request(get_block(ep, PEER, 1, 0, 4))  # 256-byte blocks from the start
    reply = only_sent(ep.respond(first, Response(Code.CONTENT, BIG), 0.0))
    assert reply.block2 == Block(0, True, 4) and reply.payload == BIG[:256]
    assert only_sent(get_block(ep, PEER, 2, 5, 4)).payload == BIG[1280:1536]
    # Asked for 1024-byte block 1 of a server that prefers 64: the block at the same offset.
    small = Endpoint(rng=lambda: 0.0, preferred_szx=2)
    first = request(get_block(small, PEER, 1, 1, 6))
    reply = only_sent(small.respond(first, Response(Code.CONTENT, BIG), 0.0))
    assert reply.block2 == Block(16, True, 2) and reply.payload == BIG[1024:1088]


def test_a_later_block_not_kept_goes_to_the_application_and_is_sliced() -> None:
    ep = endpoint()
    later = request(get_block(ep, OTHER, 1, 2, 5))
    assert later.block2 == Block(2, False, 5)
    reply = only_sent(ep.respond(later, Response(Code.CONTENT, BIG), 0.0))
    assert (reply.block2, reply.payload) == (Block(2, True, 5), BIG[1024:1536])
    small = request(ep.receive(PEER, datagram(Type.CON, 2, options=COMMAND), 0.0))
    reply = only_sent(ep.respond(small, Response(Code.CONTENT, b"short"), 0.0))
    assert reply.block2 is None and reply.payload == b"short"


# --- Observe ----------------------------------------------------------------------------------


def register(ep: Endpoint, peer: object, token: bytes, mid: int, now: float = 0.0) -> Message:
    options = [*COMMAND, option(Opt.OBSERVE, 0)]
    got = request(ep.receive(peer, datagram(Type.CON, mid, token=token, options=options), now))
    assert got.observe == 0
    return only_sent(ep.respond(got, Response(Code.CONTENT, b"{}"), now, observe=True))


def test_observe_registration_notifications_and_a_reset_ending_it() -> None:
    ep = endpoint()
    reply = register(ep, PEER, b"ob", 1)
    assert reply.observe == 0 and ep.observing(PEER, b"ob")
    notes = [
        only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT, b"c%d" % n), 1.0)) for n in (1, 2)
    ]
    assert [(m.type, m.mid, m.observe, m.token, m.payload) for m in notes] == [
        (Type.NON, 0, 1, b"ob", b"c1"),
        (Type.NON, 1, 2, b"ob", b"c2"),
    ]
    ended = ep.receive(PEER, encode(empty(Type.RST, 0)), 2.0)
    assert ended == [ObservationEnded(PEER, b"ob", "the client answered with a Reset")]
    assert ep.notify(PEER, b"ob", Response(Code.CONTENT), 3.0) == []
    assert ep.observations == 0 and ep.peers == 1  # only the remembered exchange is left
    ep.poll(EXCHANGE_LIFETIME + 1)
    assert ep.peers == 0 and ep.exchanges == 0


def test_observe_1_deregisters_and_a_declined_registration_has_no_observe_option() -> None:
    ep = endpoint()
    register(ep, PEER, b"ob", 1)
    options = [*COMMAND, option(Opt.OBSERVE, 1)]
    out = ep.receive(PEER, datagram(Type.CON, 2, token=b"ob", options=options), 1.0)
    assert out[0] == ObservationEnded(PEER, b"ob", "deregistered with Observe 1")
    assert request(out).observe == 1 and not ep.observing(PEER, b"ob")
    options = [*COMMAND, option(Opt.OBSERVE, 0)]
    got = request(ep.receive(PEER, datagram(Type.CON, 3, token=b"x", options=options), 1.0))
    declined = only_sent(ep.respond(got, Response(Code.CONTENT), 1.0))  # observe=False
    assert declined.observe is None and not ep.observing(PEER, b"x")
    got = request(ep.receive(PEER, datagram(Type.CON, 4, token=b"y", options=options), 1.0))
    refused = only_sent(ep.respond(got, Response(Code.NOT_FOUND), 1.0, observe=True))
    assert refused.observe is None and not ep.observing(PEER, b"y")
    post = [*COMMAND, option(Opt.OBSERVE, 0)]  # Observe means nothing on a POST
    got = request(ep.receive(PEER, datagram(Type.CON, 5, Code.POST, b"z", post), 1.0))
    assert got.observe is None


def test_observations_are_bounded_per_peer_and_overall() -> None:
    ep = endpoint(max_observations_per_peer=2, max_observations=3)
    assert register(ep, PEER, b"1", 1).observe is not None
    assert register(ep, PEER, b"2", 2).observe is not None
    assert register(ep, PEER, b"3", 3).observe is None
    assert register(ep, PEER, b"1", 4).observe == 1  # a re-registration: no new one, a newer number
    assert register(ep, OTHER, b"1", 1).observe is not None
    assert register(ep, ("192.0.2.3", 1), b"1", 1).observe is None
    assert ep.observations == 3


def test_sequence_numbers_wrap_at_24_bits() -> None:
    ep = Endpoint(rng=lambda: 0.99999995)  # the first sequence number is 2**24 - 1
    assert register(ep, PEER, b"ob", 1).observe == (1 << 24) - 1
    assert only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT), 1.0)).observe == 0
    assert only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT), 1.0)).observe == 1


def test_a_confirmable_notification_is_retransmitted_then_the_observation_ends() -> None:
    ep = endpoint()
    register(ep, PEER, b"ob", 1)
    note = only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT, b"v"), 10.0, confirmable=True))
    assert note.type is Type.CON
    times = []
    while (deadline := ep.next_deadline()) is not None:
        out = ep.poll(deadline)
        times.append(deadline)
        if any(isinstance(item, ObservationEnded) for item in out):
            assert out == [ObservationEnded(PEER, b"ob", "no acknowledgement")]
            break
        assert only_sent(out) == note  # the same message, the same id
    assert times == [12.0, 16.0, 24.0, 40.0, 72.0]  # 2, 4, 8, 16 s, then 32 s to give up
    assert not ep.observing(PEER, b"ob") and ep.next_deadline() is None


def test_the_random_factor_stretches_the_first_timeout() -> None:
    ep = Endpoint(rng=lambda: 0.5)
    register(ep, PEER, b"ob", 1)
    ep.notify(PEER, b"ob", Response(Code.CONTENT), 0.0, confirmable=True)
    assert ep.next_deadline() == pytest.approx(2.5)


def test_an_ack_settles_a_notification_and_a_reset_ends_the_observation() -> None:
    ep = endpoint()
    register(ep, PEER, b"ob", 1)
    note = only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT), 0.0, confirmable=True))
    assert ep.receive(PEER, encode(empty(Type.ACK, note.mid)), 1.0) == []
    assert ep.next_deadline() is None and ep.poll(100.0) == []
    note = only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT), 101.0, confirmable=True))
    ended = ep.receive(PEER, encode(empty(Type.RST, note.mid)), 102.0)
    assert ended == [ObservationEnded(PEER, b"ob", "the client answered with a Reset")]
    assert ep.next_deadline() is None


def test_a_new_confirmable_notification_replaces_the_one_in_flight() -> None:
    ep = endpoint()
    register(ep, PEER, b"ob", 1)
    old = only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT, b"old"), 0.0, confirmable=True))
    ep.poll(2.0)  # one retransmission: the next timeout is 4 s, due at 6
    new = only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT, b"new"), 3.0, confirmable=True))
    assert new.mid != old.mid and new.observe == (old.observe or 0) + 1
    assert ep.receive(PEER, encode(empty(Type.ACK, old.mid)), 3.5) == []  # too late: nothing
    assert ep.next_deadline() == 6.0
    assert only_sent(ep.poll(6.0)) == new
    assert ep.receive(PEER, encode(empty(Type.ACK, new.mid)), 7.0) == []
    assert ep.next_deadline() is None and ep.observing(PEER, b"ob")


def test_an_error_notification_ends_the_observation() -> None:
    ep = endpoint()
    register(ep, PEER, b"ob", 1)
    final = only_sent(ep.notify(PEER, b"ob", Response(Code.NOT_FOUND), 1.0))
    assert final.code == Code.NOT_FOUND and final.observe is not None
    assert not ep.observing(PEER, b"ob")


def test_a_large_notification_is_sliced_and_its_blocks_fetched_with_get() -> None:
    ep = endpoint()
    register(ep, PEER, b"ob", 1)
    note = only_sent(ep.notify(PEER, b"ob", Response(Code.CONTENT, BIG), 1.0))
    assert note.block2 == Block(0, True, 6) and note.payload == BIG[:1024]
    rest = only_sent(get_block(ep, PEER, 9, 1, 6, 2.0))
    assert rest.payload == BIG[1024:2048]


# --- separate responses and budgets -----------------------------------------------------------


def test_a_deferred_request_gets_an_empty_ack_then_a_confirmable_response() -> None:
    ep = endpoint()
    data = datagram(Type.CON, 50, Code.POST, payload=b"x")
    got = request(ep.receive(PEER, data, 0.0))
    assert only_sent(ep.defer(got)) == empty(Type.ACK, 50)
    assert ep.defer(got) == []
    assert only_sent(ep.receive(PEER, data, 1.0)) == empty(Type.ACK, 50)  # the duplicate
    response = only_sent(ep.respond(got, Response(Code.CHANGED, b"late"), 5.0))
    assert (response.type, response.token, response.payload) == (Type.CON, b"tk", b"late")
    assert ep.receive(PEER, encode(empty(Type.ACK, response.mid)), 6.0) == []
    lost = request(ep.receive(PEER, datagram(Type.CON, 51, Code.POST), 10.0))
    ep.defer(lost)
    ep.respond(lost, Response(Code.CHANGED), 10.0)
    outputs: list[Output] = []
    while (deadline := ep.next_deadline()) is not None:
        outputs += ep.poll(deadline)
    assert outputs[-1] == DeliveryFailed(PEER, b"tk", "no acknowledgement")
    assert len(sent(outputs)) == 4


def test_remembered_exchanges_are_bounded_by_forgetting_the_oldest() -> None:
    """Past its budget a peer's oldest exchange is forgotten, not the new request refused
    (refusing would cap a node at budget / EXCHANGE_LIFETIME requests per second); past the
    overall budget the oldest of anyone's goes. A forgotten request sent again is new."""
    ep = endpoint(max_exchanges_per_peer=3, max_exchanges=4)
    for mid in range(3):
        req = request(ep.receive(PEER, datagram(Type.CON, mid), float(mid)))
        ep.respond(req, Response(Code.CHANGED), float(mid))
    request(ep.receive(PEER, datagram(Type.CON, 3), 3.0))  # forgets mid 0
    assert ep.exchanges == 3
    again = ep.receive(PEER, datagram(Type.CON, 1), 3.0)  # still remembered: the cached answer
    assert only_sent(again).code == Code.CHANGED and not any(isinstance(o, Request) for o in again)
    request(ep.receive(PEER, datagram(Type.CON, 0), 3.0))  # forgotten: served again
    request(ep.receive(OTHER, datagram(Type.NON, 7), 4.0))  # overall budget: PEER's oldest goes
    assert ep.exchanges == 4
    request(ep.receive(PEER, datagram(Type.CON, 1), 4.0))
    for mid in range(1000):  # a flood keeps memory at the budget
        request(ep.receive(OTHER, datagram(Type.NON, 100 + mid), 5.0))
    assert ep.exchanges == 4
    assert len(ep._seen_con) + len(ep._seen_non) <= 2 * 4 + 1024 + 2


def test_server_message_ids_count_per_peer() -> None:
    ep = Endpoint(rng=lambda: 0.5)  # the counter starts at 0x8000
    for peer in (PEER, OTHER):
        register(ep, peer, b"ob", 1)
    mids = [
        only_sent(ep.notify(peer, b"ob", Response(Code.CONTENT), 1.0)).mid
        for peer in (PEER, PEER, OTHER, PEER)
    ]
    assert mids == [0x8000, 0x8001, 0x8000, 0x8002]


def test_new_peers_past_the_peer_budget_are_refused_known_ones_served():
    ep = endpoint(max_peers=1)
    request(ep.receive(PEER, datagram(Type.CON, 1), 0.0))
    refused = ep.receive(OTHER, datagram(Type.CON, 2), 0.0)
    reply = only_sent(refused)
    assert (reply.type, reply.code, reply.mid) == (Type.ACK, Code.SERVICE_UNAVAILABLE, 2)
    assert ep.peers == 1
    assert sent(ep.receive(OTHER, datagram(Type.NON, 3), 0.0)) == []  # dropped, no state
    request(ep.receive(PEER, datagram(Type.CON, 4), 0.0))  # a known peer still is served


def test_awaiting_ack_follows_the_confirmable_notification_in_flight():
    ep = endpoint()
    registration = request(
        ep.receive(PEER, datagram(Type.CON, 1, options=(*COMMAND, option(Opt.OBSERVE, 0))), 0.0)
    )
    ep.respond(registration, Response(Code.CONTENT), 0.0, observe=True)
    assert not ep.awaiting_ack(PEER, b"tk")
    note = only_sent(ep.notify(PEER, b"tk", Response(Code.CONTENT, b"1"), 1.0, confirmable=True))
    assert ep.awaiting_ack(PEER, b"tk")
    ep.receive(PEER, encode(empty(Type.ACK, note.mid)), 1.5)
    assert not ep.awaiting_ack(PEER, b"tk") and not ep.awaiting_ack(OTHER, b"tk")
