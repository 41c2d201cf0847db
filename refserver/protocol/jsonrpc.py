"""JSON-RPC 2.0 framing for MCP, sans-IO: bytes in, typed messages out, and back.

Request ids keep their JSON type: `1` and `"1"` are different requests (and both are hashable keys
as they are). Booleans and floats are not valid MCP ids.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeAlias

import attrs

from refserver.errors import InvalidRequest, ParseError

RequestId: TypeAlias = int | str

JSONRPC_VERSION: Final = "2.0"


@attrs.frozen
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] | None = None


@attrs.frozen
class Notification:
    method: str
    params: dict[str, Any] | None = None


@attrs.frozen
class Response:
    id: RequestId
    result: dict[str, Any]


@attrs.frozen
class ErrorResponse:
    id: RequestId | None
    code: int
    message: str
    data: Any = None


@attrs.frozen
class Invalid:
    """A batch element that is not a valid JSON-RPC message; it is answered with an error, not dropped."""

    id: RequestId | None
    reason: str


Message: TypeAlias = Request | Notification | Response | ErrorResponse
Incoming: TypeAlias = Message | Invalid


@attrs.frozen
class ParsedBody:
    messages: list[Incoming]
    is_batch: bool


def is_request_id(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _parse_object(obj: object) -> Message:
    """Raise InvalidRequest (with the id when one could be read) unless `obj` is a JSON-RPC message."""
    if not isinstance(obj, dict):
        raise InvalidRequest("JSON-RPC message must be an object")
    raw_id = obj.get("id")
    known_id = raw_id if is_request_id(raw_id) else None
    if obj.get("jsonrpc") != JSONRPC_VERSION:
        raise InvalidRequest('"jsonrpc" must be "2.0"', data={"id": known_id})
    if "method" in obj:
        method = obj["method"]
        params = obj.get("params")
        if not isinstance(method, str) or not method:
            raise InvalidRequest('"method" must be a non-empty string', data={"id": known_id})
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest('"params" must be an object', data={"id": known_id})
        if "id" not in obj:
            return Notification(method, params)
        if not is_request_id(raw_id):
            raise InvalidRequest('"id" must be a string or an integer')
        assert known_id is not None
        return Request(known_id, method, params)
    if "result" in obj or "error" in obj:
        if "result" in obj and "error" in obj:
            raise InvalidRequest('a response has "result" or "error", not both', data={"id": known_id})
        if "error" in obj:
            error = obj["error"]
            code = error.get("code") if isinstance(error, dict) else None
            if isinstance(code, bool) or not isinstance(code, int):
                raise InvalidRequest('"error" must be an object with an integer "code"', data={"id": known_id})
            if raw_id is not None and known_id is None:
                raise InvalidRequest('"id" must be a string, an integer or null')
            return ErrorResponse(known_id, code, str(error.get("message", "")), error.get("data"))
        if known_id is None:
            raise InvalidRequest('a response needs a string or integer "id"')
        result = obj["result"]
        if not isinstance(result, dict):
            raise InvalidRequest('"result" must be an object', data={"id": known_id})
        return Response(known_id, result)
    raise InvalidRequest("not a JSON-RPC request, notification or response", data={"id": known_id})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
"""A `\\uD800`-`\\uDFFF` escape: json.loads decodes a lone one into a str that cannot be encoded again."""


def _reject_lone_surrogates(body: str, decoded: Any) -> None:
    """A string holding a lone surrogate is no Unicode text (RFC 8259 section 8.2, I-JSON): refused here, at the
    edge, rather than failing later when an answer that echoes it (its id, its method) is encoded."""
    if _SURROGATE_ESCAPE.search(body) is None:
        return  # the common case: one regex scan, no walk
    try:
        _encoder.encode(decoded).encode("utf-8")  # a well-formed pair was joined into one code point and passes
    except UnicodeEncodeError as exc:
        raise ValueError("a \\u escape encodes a lone surrogate, which is not a Unicode character") from exc


def parse_message(obj: object) -> Message | None:
    """One already-decoded message (e.g. relayed between instances); None if it is not valid."""
    try:
        return _parse_object(obj)
    except InvalidRequest:
        return None


def parse_body(body: bytes | str) -> ParsedBody:
    """Parse one HTTP body: a single message, or a batch (array) of them.

    A body that is not JSON raises ParseError; a single invalid message raises InvalidRequest; invalid
    elements of a batch come back as `Invalid` so that each gets its own error response.
    """
    try:
        if isinstance(body, bytes):
            # Strict decoding: json.loads alone lets UTF-8-encoded surrogates through ("surrogatepass").
            body = body.decode(json.detect_encoding(body))
        decoded = json.loads(body, parse_constant=_reject_constant)
        _reject_lone_surrogates(body, decoded)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
    if isinstance(decoded, list):
        if not decoded:
            raise InvalidRequest("empty batch")
        messages: list[Incoming] = []
        for element in decoded:
            try:
                messages.append(_parse_object(element))
            except InvalidRequest as exc:
                element_id = exc.data.get("id") if isinstance(exc.data, dict) else None
                messages.append(Invalid(element_id, exc.message))
        return ParsedBody(messages, is_batch=True)
    return ParsedBody([_parse_object(decoded)], is_batch=False)


def message_to_dict(message: Message) -> dict[str, Any]:
    if isinstance(message, Request):
        out: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "id": message.id, "method": message.method}
        if message.params is not None:
            out["params"] = message.params
        return out
    if isinstance(message, Notification):
        out = {"jsonrpc": JSONRPC_VERSION, "method": message.method}
        if message.params is not None:
            out["params"] = message.params
        return out
    if isinstance(message, Response):
        return {"jsonrpc": JSONRPC_VERSION, "id": message.id, "result": message.result}
    error: dict[str, Any] = {"code": message.code, "message": message.message}
    if message.data is not None:
        error["data"] = message.data
    return {"jsonrpc": JSONRPC_VERSION, "id": message.id, "error": error}


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode_json(value: Any) -> str:
    return _encoder.encode(value)


def encode_message(message: Message) -> str:
    return _encoder.encode(message_to_dict(message))


def encode_messages(messages: list[Message], *, as_batch: bool) -> str:
    if as_batch:
        return _encoder.encode([message_to_dict(m) for m in messages])
    assert len(messages) == 1
    return encode_message(messages[0])
