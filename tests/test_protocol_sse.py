"""Sans-IO Server-Sent Events: refserver.protocol.sse encoding and the incremental decoder (no sockets)."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable

import pytest

from refserver.protocol.sse import (
    HEARTBEAT,
    MAX_LINE_BYTES,
    SSEDecoder,
    SSEEvent,
    encode_comment,
    encode_event,
)


def decode_chunks(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> list[SSEEvent]:
    decoder = decoder if decoder is not None else SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- encoding ---


def test_encode_data_only() -> None:
    assert encode_event("hello") == b"data: hello\n\n"


def test_encode_all_fields_in_order() -> None:
    encoded = encode_event('{"a":1}', event_id="s1-42", event="message", retry_ms=1500)
    assert encoded == b'id: s1-42\nevent: message\nretry: 1500\ndata: {"a":1}\n\n'


def test_encode_multi_line_data_gives_one_data_line_each() -> None:
    assert encode_event("one\ntwo\n\nfour") == b"data: one\ndata: two\ndata: \ndata: four\n\n"
    assert encode_event("trailing\n") == b"data: trailing\ndata: \n\n"


@pytest.mark.parametrize("data", ["a\r\nb", "a\rb", "a\nb"])
def test_encode_splits_data_on_every_line_break(data: str) -> None:
    assert encode_event(data) == b"data: a\ndata: b\n\n"


def test_encode_empty_data_is_bare_data_field() -> None:
    assert encode_event("") == b"data:\n\n"
    assert encode_event("", event_id="s-0", retry_ms=1000) == b"id: s-0\nretry: 1000\ndata:\n\n"


def test_encode_without_data() -> None:
    assert encode_event(None, retry_ms=3000) == b"retry: 3000\n\n"
    assert encode_event(None) == b"\n"


def test_encode_is_utf8() -> None:
    assert encode_event("é日🎉", event_id="ü") == "id: ü\ndata: é日🎉\n\n".encode()


@pytest.mark.parametrize("event_id", ["a\nb", "a\rb", "a\r\n", "a\0b"])
def test_encode_rejects_line_break_or_nul_in_id(event_id: str) -> None:
    with pytest.raises(ValueError, match="event id must not contain newlines or NUL"):
        encode_event("x", event_id=event_id)


@pytest.mark.parametrize("event", ["a\nb", "a\rb"])
def test_encode_rejects_line_break_in_event_type(event: str) -> None:
    with pytest.raises(ValueError, match="event type must not contain newlines"):
        encode_event("x", event=event)


def test_encode_comment_and_heartbeat() -> None:
    assert encode_comment("keep-alive") == b": keep-alive\n\n"
    assert HEARTBEAT == b": ping\n\n"
    assert encode_comment("ping") == HEARTBEAT


# --- decoding a fixed multi-event stream in every chunking ---

STREAM_LF = (
    ": stream opened\n"
    "retry: 2000\n"
    "id: s-0\n"
    "data:\n"
    "\n"
    'data: {"jsonrpc":"2.0","method":"x"}\n'
    "\n"
    "event: endpoint\n"
    "data: /message?sessionId=abc\n"
    "\n"
    ": ping\n"
    "\n"
    "id: s-1\n"
    "data: first line\n"
    "data:  indented\n"
    "data:no-space\n"
    "data\n"
    "\n"
    "id: s-2\n"
    "data: h\u00e9llo \u65e5\u672c \U0001f389\n"
    "\n"
    "retry: soon\n"
    "data: after bad retry\n"
    "\n"
).encode()

STREAM_EVENTS = [
    SSEEvent(data="", event="message", id="s-0", retry=2000),
    SSEEvent(data='{"jsonrpc":"2.0","method":"x"}', event="message", id="s-0", retry=2000),
    SSEEvent(data="/message?sessionId=abc", event="endpoint", id="s-0", retry=2000),
    SSEEvent(data="first line\n indented\nno-space\n", event="message", id="s-1", retry=2000),
    SSEEvent(data="h\u00e9llo \u65e5\u672c \U0001f389", event="message", id="s-2", retry=2000),
    SSEEvent(data="after bad retry", event="message", id="s-2", retry=2000),
]

LINE_ENDINGS = {"LF": b"\n", "CRLF": b"\r\n", "CR": b"\r"}


def stream_with(ending: bytes) -> bytes:
    return STREAM_LF.replace(b"\n", ending)


def check_final_state(decoder: SSEDecoder) -> None:
    assert decoder.last_event_id == "s-2"
    assert decoder.retry == 2000
    assert decoder.comments == 2


@pytest.mark.parametrize("ending", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_decode_whole_stream(ending: bytes) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(stream_with(ending)) == STREAM_EVENTS
    check_final_state(decoder)


@pytest.mark.parametrize("ending", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_decode_byte_by_byte(ending: bytes) -> None:
    decoder = SSEDecoder()
    assert decode_chunks(byte_by_byte(stream_with(ending)), decoder) == STREAM_EVENTS
    check_final_state(decoder)


@pytest.mark.parametrize("ending", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_decode_every_two_chunk_split(ending: bytes) -> None:
    stream = stream_with(ending)
    for cut in range(len(stream) + 1):
        decoder = SSEDecoder()
        events = decode_chunks([stream[:cut], stream[cut:]], decoder)
        assert events == STREAM_EVENTS, f"split at byte {cut}: {stream[:cut]!r} | {stream[cut:]!r}"
        check_final_state(decoder)


def test_decode_mixed_line_endings() -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    assert SSEDecoder().feed(stream) == [SSEEvent("a\nb\nc"), SSEEvent("d")]


# --- line-ending edge cases across chunks ---


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SSEEvent("a\nb")]


def test_crlf_split_with_empty_chunk_in_between() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\n\r") == [SSEEvent("a\nb")]
    assert decoder.feed(b"\n") == []


def test_cr_followed_by_cr_across_chunks_is_two_line_breaks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SSEEvent("a")]


def test_multibyte_character_split_across_chunks() -> None:
    encoded = "data: \u00e9\U0001f389\n\n".encode()
    start = encoded.index(b"\xc3")
    for cut in range(start + 1, start + 6):
        decoder = SSEDecoder()
        assert decoder.feed(encoded[:cut]) == []
        assert decoder.feed(encoded[cut:]) == [SSEEvent("\u00e9\U0001f389")]


def test_invalid_utf8_is_replaced() -> None:
    assert SSEDecoder().feed(b"data: a\xffb\n\n") == [SSEEvent("a\ufffdb")]


def test_leading_bom_is_skipped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert SSEDecoder().feed(stream) == [SSEEvent("x")]
    assert decode_chunks(byte_by_byte(stream)) == [SSEEvent("x")]


def test_bom_only_skipped_at_stream_start() -> None:
    # A BOM later in the stream is part of the line, so "\ufeffdata" is an unknown field.
    assert SSEDecoder().feed(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [SSEEvent("x")]


def test_line_too_long_is_refused() -> None:
    decoder = SSEDecoder()
    with pytest.raises(ValueError, match="SSE line too long"):
        decoder.feed(b"data: " + b"x" * MAX_LINE_BYTES)


def test_long_line_below_limit_is_fine() -> None:
    payload = "y" * 100_000
    assert SSEDecoder().feed(f"data: {payload}\n\n".encode()) == [SSEEvent(payload)]


# --- field semantics ---


def test_comments_are_counted_and_produce_no_events() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(HEARTBEAT + b":\n:no space\n\n" + HEARTBEAT) == []
    assert decoder.comments == 4
    assert decoder.feed(b": inside\ndata: x\n: also inside\n\n") == [SSEEvent("x")]
    assert decoder.comments == 6


def test_event_type_defaults_to_message_and_resets_after_dispatch() -> None:
    stream = b"event: endpoint\ndata: /m\n\ndata: next\n\nevent:\ndata: empty type\n\n"
    assert SSEDecoder().feed(stream) == [
        SSEEvent("/m", event="endpoint"),
        SSEEvent("next", event="message"),
        SSEEvent("empty type", event="message"),
    ]


def test_event_type_of_a_data_less_block_does_not_leak() -> None:
    assert SSEDecoder().feed(b"event: orphan\n\ndata: x\n\n") == [SSEEvent("x", event="message")]


def test_last_field_wins() -> None:
    stream = b"event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n"
    assert SSEDecoder().feed(stream) == [SSEEvent("x", event="b", id="2")]


def test_id_persists_across_events() -> None:
    decoder = SSEDecoder()
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"
    assert decoder.feed(stream) == [SSEEvent("a", id="1"), SSEEvent("b", id="1"), SSEEvent("c", id="2")]
    assert decoder.last_event_id == "2"


def test_id_only_block_updates_last_event_id_without_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\n\n") == []
    assert decoder.last_event_id == "7"
    assert decoder.feed(b"data: x\n\n") == [SSEEvent("x", id="7")]


def test_empty_id_resets_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid\ndata: b\n\n") == [SSEEvent("a", id="1"), SSEEvent("b", id="")]
    assert decoder.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n")
    assert events == [SSEEvent("a", id="1"), SSEEvent("b", id="1")]
    assert decoder.last_event_id == "1"


def test_initial_last_event_id_is_used() -> None:
    assert SSEDecoder(last_event_id="s-9").feed(b"data: x\n\n") == [SSEEvent("x", id="s-9")]


def test_retry_parsing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 2500\n\n") == []
    assert decoder.retry == 2500
    for bad in (b"retry: 12a", b"retry: -1", b"retry: 1.5", b"retry:", b"retry:  30", b"retry: \xc2\xb2"):
        assert decoder.feed(bad + b"\n\n") == []
        assert decoder.retry == 2500, bad
    assert decoder.feed(b"retry:0\ndata: x\n\n") == [SSEEvent("x", retry=0)]
    assert decoder.retry == 0


def test_non_ascii_digit_retry_is_ignored_without_error() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("retry: \u0661\u0662\ndata: x\n\n".encode()) == [SSEEvent("x", retry=None)]
    assert decoder.retry is None


def test_only_one_leading_space_is_stripped() -> None:
    assert SSEDecoder().feed(b"data:  two\n\ndata:none\n\ndata: \n\n") == [
        SSEEvent(" two"),
        SSEEvent("none"),
        SSEEvent(""),
    ]


def test_field_without_colon_has_empty_value() -> None:
    assert SSEDecoder().feed(b"data\ndata\n\n") == [SSEEvent("\n")]


def test_colon_in_value_is_kept() -> None:
    assert SSEDecoder().feed(b"data: a: b:c\n\n") == [SSEEvent("a: b:c")]


def test_unknown_fields_are_ignored() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"foo: bar\nData: no\nDATA: no\n\n") == []
    assert decoder.feed(b"foo: bar\ndata: x\n\n") == [SSEEvent("x")]


def test_trailing_data_without_blank_line_waits_for_it() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.feed(b"data: y") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [SSEEvent("x\ny")]


def test_empty_feed_yields_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: x\n\n") == [SSEEvent("x")]


def test_priming_event_round_trip() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(encode_event("", event_id="stream-0", retry_ms=1000))
    assert events == [SSEEvent("", event="message", id="stream-0", retry=1000)]
    assert decoder.last_event_id == "stream-0"


def test_retry_only_event_round_trip() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(encode_event(None, retry_ms=4000)) == []
    assert decoder.retry == 4000


# --- property-style: encode -> random chunking -> decode ---

# Pieces of event data: line breaks of every kind, NUL, multi-byte characters, field look-alikes.
LINE_BREAKS = ("\n", "\r", "\r\n")
ALPHABET = (*LINE_BREAKS, "a", "Z", " ", ":", "\t", "\x00", "é", "日", "🎉", "\u2028", "\ufeff", "data: ")


def random_text(rng: random.Random, max_parts: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_parts)))


def random_line(rng: random.Random) -> str:
    return "".join(c for c in random_text(rng, 6) if c not in "\r\n\x00")


@pytest.mark.parametrize("ending", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_round_trip_random_events_in_random_chunks(ending: bytes) -> None:
    rng = random.Random(20250326)
    for _ in range(60):
        encoded = b""
        expected: list[SSEEvent] = []
        last_id: str | None = None
        retry: int | None = None
        for _ in range(rng.randint(1, 6)):
            data = random_text(rng, 12)
            event_id = random_line(rng) if rng.random() < 0.5 else None
            event = random_line(rng) if rng.random() < 0.3 else None
            retry_ms = rng.randint(0, 10_000) if rng.random() < 0.2 else None
            if rng.random() < 0.2:
                encoded += encode_comment(random_line(rng))
            encoded += encode_event(data, event_id=event_id, event=event, retry_ms=retry_ms)
            last_id = event_id if event_id is not None else last_id
            retry = retry_ms if retry_ms is not None else retry
            expected.append(
                SSEEvent(
                    data=re.sub(r"\r\n|\r", "\n", data),
                    event=event or "message",
                    id=last_id,
                    retry=retry,
                )
            )
        stream = encoded.replace(b"\n", ending)
        assert SSEDecoder().feed(stream) == expected
        assert decode_chunks(byte_by_byte(stream)) == expected
        for _ in range(8):
            chunks = random_chunks(stream, rng)
            assert b"".join(chunks) == stream
            assert decode_chunks(chunks) == expected, chunks
