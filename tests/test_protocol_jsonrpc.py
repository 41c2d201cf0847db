"""Sans-IO JSON-RPC framing: refserver.protocol.jsonrpc, bytes in and typed messages out (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from refserver.errors import INVALID_REQUEST, PARSE_ERROR, InvalidRequest, ParseError
from refserver.protocol.jsonrpc import (
    ErrorResponse,
    Invalid,
    Message,
    Notification,
    ParsedBody,
    Request,
    Response,
    encode_json,
    encode_message,
    encode_messages,
    is_request_id,
    message_to_dict,
    parse_body,
)


def body(**fields: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **fields}).encode()


def parse_one(raw: bytes | str) -> Any:
    parsed = parse_body(raw)
    assert parsed.is_batch is False
    assert len(parsed.messages) == 1
    return parsed.messages[0]


# --- single messages ---


def test_request() -> None:
    raw = body(id=7, method="tools/call", params={"name": "echo", "arguments": {"x": 1}})
    assert parse_body(raw) == ParsedBody(
        [Request(7, "tools/call", {"name": "echo", "arguments": {"x": 1}})], is_batch=False
    )


def test_request_without_params() -> None:
    assert parse_one(body(id="abc", method="ping")) == Request("abc", "ping", None)


def test_request_with_explicit_null_params() -> None:
    assert parse_one(body(id=1, method="ping", params=None)) == Request(1, "ping", None)


def test_notification() -> None:
    raw = body(method="notifications/cancelled", params={"requestId": 3})
    assert parse_one(raw) == Notification("notifications/cancelled", {"requestId": 3})


def test_notification_without_params() -> None:
    assert parse_one(body(method="notifications/initialized")) == Notification("notifications/initialized")


def test_response() -> None:
    assert parse_one(body(id=4, result={"content": []})) == Response(4, {"content": []})


def test_response_with_empty_result() -> None:
    assert parse_one(body(id="r", result={})) == Response("r", {})


def test_error_response() -> None:
    raw = body(id=5, error={"code": -32601, "message": "Method not found", "data": {"m": "x"}})
    assert parse_one(raw) == ErrorResponse(5, -32601, "Method not found", {"m": "x"})


def test_error_response_with_null_id_and_no_message() -> None:
    assert parse_one(body(id=None, error={"code": -32700})) == ErrorResponse(None, -32700, "", None)


def test_error_response_without_id_member() -> None:
    assert parse_one(body(error={"code": 1, "message": "m"})) == ErrorResponse(None, 1, "m", None)


# --- ids keep their JSON type ---


def test_integer_and_string_ids_stay_distinct() -> None:
    as_int = parse_one(body(id=1, method="ping"))
    as_str = parse_one(body(id="1", method="ping"))
    assert as_int.id == 1
    assert type(as_int.id) is int
    assert as_str.id == "1"
    assert type(as_str.id) is str
    assert as_int != as_str
    pending = {as_int.id: "int", as_str.id: "str"}
    assert len(pending) == 2
    assert pending[1] == "int"
    assert pending["1"] == "str"


def test_ids_round_trip_with_their_type() -> None:
    for request_id in (0, -1, 2**53 + 1, "", "1", "ü-id"):
        request = parse_one(body(id=request_id, method="ping"))
        assert json.loads(encode_message(request))["id"] == request_id
        assert type(json.loads(encode_message(request))["id"]) is type(request_id)


@pytest.mark.parametrize("bad_id", [True, False, 1.0, 1.5, None, [1], {"a": 1}])
def test_request_rejects_non_string_non_integer_id(bad_id: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body(id=bad_id, method="ping"))
    assert info.value.message == '"id" must be a string or an integer'
    assert info.value.jsonrpc_code == INVALID_REQUEST


@pytest.mark.parametrize("bad_id", [True, 2.0, [1]])
def test_response_rejects_bad_id(bad_id: object) -> None:
    with pytest.raises(InvalidRequest, match='a response needs a string or integer "id"'):
        parse_body(body(id=bad_id, result={}))


def test_response_rejects_null_id() -> None:
    with pytest.raises(InvalidRequest, match='a response needs a string or integer "id"'):
        parse_body(body(id=None, result={}))


def test_error_response_rejects_bool_id() -> None:
    with pytest.raises(InvalidRequest, match='"id" must be a string, an integer or null'):
        parse_body(body(id=False, error={"code": 1}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, True), (-3, True), ("x", True), ("", True), (True, False), (1.0, False), (None, False), ([], False)],
)
def test_is_request_id(value: object, expected: bool) -> None:
    assert is_request_id(value) is expected


# --- invalid single messages ---


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1", "JSON-RPC message must be an object"),
        (b'"hello"', "JSON-RPC message must be an object"),
        (b"null", "JSON-RPC message must be an object"),
        (b"true", "JSON-RPC message must be an object"),
        (b"{}", '"jsonrpc" must be "2.0"'),
    ],
)
def test_non_message_json_is_invalid_request(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw)
    assert info.value.message == reason


@pytest.mark.parametrize("version", ["1.0", "2", 2.0, None])
def test_wrong_jsonrpc_version(version: object) -> None:
    raw = json.dumps({"jsonrpc": version, "id": 9, "method": "ping"}).encode()
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw)
    assert info.value.message == '"jsonrpc" must be "2.0"'
    assert info.value.data == {"id": 9}


def test_missing_jsonrpc_member() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(b'{"id": "q", "method": "ping"}')
    assert info.value.data == {"id": "q"}


@pytest.mark.parametrize("params", [[1, 2], "x", 3, True])
def test_params_must_be_an_object(params: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body(id=2, method="tools/list", params=params))
    assert info.value.message == '"params" must be an object'
    assert info.value.data == {"id": 2}


def test_notification_params_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest, match='"params" must be an object'):
        parse_body(body(method="notifications/progress", params=[1]))


@pytest.mark.parametrize("method", ["", 5, None, ["ping"]])
def test_method_must_be_a_non_empty_string(method: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body(id=1, method=method))
    assert info.value.message == '"method" must be a non-empty string'
    assert info.value.data == {"id": 1}


def test_result_and_error_together() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body(id=1, result={}, error={"code": 1}))
    assert info.value.message == 'a response has "result" or "error", not both'


@pytest.mark.parametrize("error", [None, "boom", {"message": "no code"}, {"code": "1"}, {"code": 1.5}])
def test_error_needs_integer_code(error: object) -> None:
    with pytest.raises(InvalidRequest, match='"error" must be an object with an integer "code"'):
        parse_body(body(id=1, error=error))


@pytest.mark.parametrize("code", [True, False])
def test_error_code_must_not_be_a_bool(code: bool) -> None:
    with pytest.raises(InvalidRequest, match='"error" must be an object with an integer "code"'):
        parse_body(body(id=1, error={"code": code, "message": "x"}))


@pytest.mark.parametrize("result", [[], "ok", 1, None])
def test_result_must_be_an_object(result: object) -> None:
    with pytest.raises(InvalidRequest, match='"result" must be an object'):
        parse_body(body(id=1, result=result))


def test_object_that_is_no_message() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body(id=3))
    assert info.value.message == "not a JSON-RPC request, notification or response"
    assert info.value.data == {"id": 3}


# --- malformed input ---


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b'{"jsonrpc": "2.0", "method": }',
        b"{'jsonrpc': '2.0'}",
        b'{"jsonrpc":"2.0","method":"x",}',
        b"[1, 2",
        b"undefined",
    ],
)
def test_malformed_json_is_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_body(raw)
    assert info.value.jsonrpc_code == PARSE_ERROR
    assert info.value.http_status == 400
    assert info.value.message.startswith("invalid JSON: ")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jsonrpc":"2.0","method":"x"} garbage',
        b'{"jsonrpc":"2.0","method":"x"}{"jsonrpc":"2.0","method":"y"}',
        b'[{"jsonrpc":"2.0","method":"x"}] ]',
        b'{"jsonrpc":"2.0","method":"x"} 1',
    ],
)
def test_trailing_data_is_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError, match="Extra data"):
        parse_body(raw)


def test_surrounding_whitespace_is_fine() -> None:
    assert parse_one(b' \r\n\t{"jsonrpc":"2.0","method":"x"}\n ') == Notification("x")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jsonrpc":"2.0","method":"x","params":{"s":"\xff"}}',
        b'{"jsonrpc":"2.0","method":"x","params":{"s":"\xc3"}}',
        b'{"jsonrpc":"2.0","method":"x","params":{"s":"\xc0\xaf"}}',
        # A UTF-8-encoded lone surrogate (U+D800) is not valid UTF-8 either.
        b'{"jsonrpc":"2.0","method":"x","params":{"s":"\xed\xa0\x80"}}',
    ],
)
def test_invalid_utf8_is_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_body(raw)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_parse_errors(constant: str) -> None:
    raw = b'{"jsonrpc":"2.0","method":"x","params":{"n":' + constant.encode() + b"}}"
    with pytest.raises(ParseError, match=f"{constant} is not valid JSON"):
        parse_body(raw)


def test_deeply_nested_body_is_parse_error_not_recursion_error() -> None:
    with pytest.raises(ParseError):
        parse_body(b"[" * 100_000 + b"]" * 100_000)


def test_bytes_and_str_input_agree() -> None:
    text = '{"jsonrpc":"2.0","id":"é","method":"tools/call","params":{"name":"日本語"}}'
    expected = Request("é", "tools/call", {"name": "日本語"})
    assert parse_one(text) == expected
    assert parse_one(text.encode("utf-8")) == expected


def test_utf8_bom_is_accepted_in_bytes() -> None:
    assert parse_one(b'\xef\xbb\xbf{"jsonrpc":"2.0","method":"x"}') == Notification("x")


# --- batches ---


def test_batch_of_mixed_messages() -> None:
    raw = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "s1", "result": {"ok": True}},
            {"jsonrpc": "2.0", "id": "s2", "error": {"code": -1, "message": "no"}},
        ]
    )
    assert parse_body(raw) == ParsedBody(
        [
            Request(1, "ping"),
            Notification("notifications/initialized"),
            Response("s1", {"ok": True}),
            ErrorResponse("s2", -1, "no"),
        ],
        is_batch=True,
    )


def test_batch_of_one_is_still_a_batch() -> None:
    assert parse_body(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]') == ParsedBody([Request(1, "ping")], is_batch=True)


def test_empty_batch_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(b"[]")
    assert info.value.message == "empty batch"


def test_batch_invalid_elements_become_invalid_entries_in_place() -> None:
    raw = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            1,
            {"jsonrpc": "1.0", "id": "v", "method": "ping"},
            {"jsonrpc": "2.0", "id": 4, "method": "x", "params": [1]},
            {"jsonrpc": "2.0", "id": True, "method": "ping"},
            {"jsonrpc": "2.0", "id": 6, "method": ""},
            {"jsonrpc": "2.0", "id": 7, "result": "not an object"},
            {"jsonrpc": "2.0", "id": 8},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]
    )
    parsed = parse_body(raw)
    assert parsed.is_batch is True
    assert parsed.messages == [
        Request(1, "ping"),
        Invalid(None, "JSON-RPC message must be an object"),
        Invalid("v", '"jsonrpc" must be "2.0"'),
        Invalid(4, '"params" must be an object'),
        Invalid(None, '"id" must be a string or an integer'),
        Invalid(6, '"method" must be a non-empty string'),
        Invalid(7, '"result" must be an object'),
        Invalid(8, "not a JSON-RPC request, notification or response"),
        Notification("notifications/initialized"),
    ]


def test_batch_keeps_id_types_of_invalid_entries() -> None:
    parsed = parse_body(b'[{"jsonrpc":"1","id":1,"method":"a"},{"jsonrpc":"1","id":"1","method":"a"}]')
    first, second = parsed.messages
    assert isinstance(first, Invalid)
    assert isinstance(second, Invalid)
    assert type(first.id) is int
    assert type(second.id) is str


def test_batch_of_only_invalid_elements() -> None:
    assert parse_body(b"[1, 2]") == ParsedBody([Invalid(None, "JSON-RPC message must be an object")] * 2, is_batch=True)


def test_nested_batch_element_is_invalid() -> None:
    parsed = parse_body(b'[[{"jsonrpc":"2.0","method":"x"}]]')
    assert parsed.messages == [Invalid(None, "JSON-RPC message must be an object")]


def test_malformed_batch_is_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_body(b'[{"jsonrpc":"2.0","method":"x"},]')


# --- encoding ---


def test_message_to_dict_for_each_kind() -> None:
    assert message_to_dict(Request(1, "ping")) == {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert message_to_dict(Request("a", "m", {"k": 1})) == {
        "jsonrpc": "2.0",
        "id": "a",
        "method": "m",
        "params": {"k": 1},
    }
    assert message_to_dict(Notification("n")) == {"jsonrpc": "2.0", "method": "n"}
    assert message_to_dict(Notification("n", {})) == {"jsonrpc": "2.0", "method": "n", "params": {}}
    assert message_to_dict(Response(2, {})) == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert message_to_dict(ErrorResponse(None, -32700, "bad")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "bad"},
    }
    assert message_to_dict(ErrorResponse("e", 1, "m", {"d": 1})) == {
        "jsonrpc": "2.0",
        "id": "e",
        "error": {"code": 1, "message": "m", "data": {"d": 1}},
    }


ROUND_TRIP: list[Message] = [
    Request(1, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}),
    Request("1", "ping"),
    Notification("notifications/progress", {"progressToken": "t", "progress": 0.5}),
    Notification("notifications/initialized"),
    Response(3, {"content": [{"type": "text", "text": "ok"}]}),
    Response("x", {}),
    ErrorResponse(4, -32602, "Invalid params", {"field": "name"}),
    ErrorResponse(None, -32700, "Parse error"),
]


@pytest.mark.parametrize("message", ROUND_TRIP)
def test_encode_then_parse_round_trips(message: Message) -> None:
    encoded = encode_message(message)
    assert json.loads(encoded) == message_to_dict(message)
    assert parse_one(encoded) == message
    assert parse_one(encoded.encode()) == message


def test_encode_messages_batch_round_trips() -> None:
    encoded = encode_messages(ROUND_TRIP, as_batch=True)
    assert encoded.startswith("[")
    assert parse_body(encoded) == ParsedBody(list(ROUND_TRIP), is_batch=True)


def test_encode_messages_single() -> None:
    assert encode_messages([Request(1, "ping")], as_batch=False) == '{"jsonrpc":"2.0","id":1,"method":"ping"}'


def test_encoding_is_compact() -> None:
    assert encode_message(Response(1, {"a": [1, 2]})) == '{"jsonrpc":"2.0","id":1,"result":{"a":[1,2]}}'
    assert encode_json({"a": None, "b": [True]}) == '{"a":null,"b":[true]}'


def test_non_ascii_text_survives_encoding_unescaped() -> None:
    text = "héllo wörld — 日本語 🎉"
    encoded = encode_message(Notification("notifications/message", {"data": text}))
    assert text in encoded
    assert "\\u" not in encoded
    decoded = parse_one(encoded.encode("utf-8"))
    assert decoded == Notification("notifications/message", {"data": text})


def test_control_characters_are_escaped() -> None:
    encoded = encode_json({"s": "a\nb\u0000"})
    assert encoded == '{"s":"a\\nb\\u0000"}'
    assert "\n" not in encoded


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}',
        b'{"jsonrpc":"2.0","id":"\\udfff","method":"ping"}',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"a\\uDBFFb"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"\\ud83d":1}}',
        b'[{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\\ude00\\ud83d"}}]',
    ],
)
def test_a_lone_surrogate_escape_is_a_parse_error(raw: bytes) -> None:
    """Found by tests/test_fuzz_http.py: such a string decoded, then failed to encode in the answer (a 500)."""
    with pytest.raises(ParseError, match="lone surrogate"):
        parse_body(raw)


def test_a_surrogate_pair_escape_is_one_character() -> None:
    parsed = parse_body(b'{"jsonrpc":"2.0","id":"\\ud83d\\ude00","method":"\\\\ud800"}')
    assert parsed.messages == [Request("\U0001f600", "\\ud800")]
