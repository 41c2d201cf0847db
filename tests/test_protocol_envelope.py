"""The 2026 era, sans-IO: the era decision (a table), the envelope checks in their order, the sealed state."""

from __future__ import annotations

from typing import Any

import pytest

from refserver.errors import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    UNSUPPORTED_PROTOCOL_VERSION,
    RefserverError,
)
from refserver.protocol.envelope import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    LOG_LEVEL_KEY,
    PROTOCOL_VERSION_KEY,
    Era,
    check_mirrored_schema,
    check_param_headers,
    decode_header_value,
    era_of,
    read_envelope,
)
from refserver.protocol.request_state import InvalidRequestState, RequestStateSeal, derive_key

META = {PROTOCOL_VERSION_KEY: "2026-07-28", CLIENT_CAPABILITIES_KEY: {"sampling": {}}}
HEADERS = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}


@pytest.mark.parametrize(
    ("session_id", "version_header", "meta", "era"),
    [
        ("abc", None, None, Era.SESSION),
        ("abc", "2026-07-28", META, Era.SESSION),  # a session's requests stay 2025 whatever they say
        ("abc", "1999-01-01", None, Era.SESSION),
        (None, "2026-07-28", META, Era.STATELESS),
        (None, "2026-07-28", None, Era.STATELESS),  # told what its _meta lacks
        (None, "2099-01-01", None, Era.STATELESS),  # told which versions are served
        (None, "2025-11-25", None, Era.SESSION),
        (None, "2025-03-26", META, Era.SESSION),
        (None, None, META, Era.STATELESS),  # forgot the header: told so
        (None, None, {"progressToken": 1}, Era.SESSION),
        (None, None, None, Era.SESSION),  # initialize, or refused for its missing session
        ("", "2026-07-28", None, Era.STATELESS),
    ],
)
def test_era_of(session_id: str | None, version_header: str | None, meta: object, era: Era) -> None:
    assert era_of(session_id, version_header, meta) is era


def code_of(method: str, params: dict[str, Any] | None, headers: dict[str, str]) -> int:
    with pytest.raises(RefserverError) as info:
        read_envelope(method, params, headers, None)
    return info.value.jsonrpc_code


def call(meta: Any, **more: Any) -> dict[str, Any]:
    return {"name": "echo", "arguments": {}, "_meta": meta, **more}


def test_envelope_checks_come_in_the_spec_order() -> None:
    assert code_of("tools/call", {"name": "echo"}, HEADERS) == INVALID_PARAMS
    assert code_of("tools/call", call({PROTOCOL_VERSION_KEY: "2026-07-28"}), HEADERS) == INVALID_PARAMS
    assert code_of("tools/call", call({CLIENT_CAPABILITIES_KEY: {}}), HEADERS) == INVALID_PARAMS
    # A missing key wins over a header that disagrees; a disagreeing header wins over an unknown version.
    assert code_of("tools/call", call({CLIENT_CAPABILITIES_KEY: {}}), {}) == INVALID_PARAMS
    unknown = {**META, PROTOCOL_VERSION_KEY: "2099-01-01"}
    assert code_of("tools/call", call(unknown), HEADERS) == HEADER_MISMATCH
    assert code_of("tools/call", call(unknown), {**HEADERS, "mcp-protocol-version": "2099-01-01"}) == (
        UNSUPPORTED_PROTOCOL_VERSION
    )
    assert code_of("tools/call", call(META), {**HEADERS, "mcp-method": "tools/list"}) == HEADER_MISMATCH
    assert code_of("tools/call", call(META), {**HEADERS, "mcp-name": "add"}) == HEADER_MISMATCH
    assert code_of("tools/call", call(META), {k: v for k, v in HEADERS.items() if k != "mcp-name"}) == (HEADER_MISMATCH)
    assert code_of("tools/call", call({**META, CLIENT_CAPABILITIES_KEY: []}), HEADERS) == INVALID_PARAMS
    assert code_of("tools/call", call({**META, LOG_LEVEL_KEY: "loud"}), HEADERS) == INVALID_PARAMS


def test_unsupported_version_names_the_served_ones() -> None:
    with pytest.raises(RefserverError) as info:
        read_envelope(
            "server/discover",
            {"_meta": {**META, PROTOCOL_VERSION_KEY: "2099-01-01"}},
            {"mcp-protocol-version": "2099-01-01", "mcp-method": "server/discover"},
            None,
        )
    assert info.value.data == {"supported": ["2026-07-28"], "requested": "2099-01-01"}


def test_envelope_becomes_the_request_meta() -> None:
    meta = {
        **META,
        CLIENT_INFO_KEY: {"name": "c", "version": "1"},
        LOG_LEVEL_KEY: "warning",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    read = read_envelope("tools/call", call(meta), HEADERS, "alice")
    assert read.protocol_version == "2026-07-28"
    assert read.client_supports("sampling") and not read.client_supports("elicitation")
    assert read.client_info == {"name": "c", "version": "1"}
    assert read.log_level == "warning" and read.subject == "alice"
    assert read.trace is not None and read.trace.traceparent == meta["traceparent"]
    # clientInfo is a SHOULD: its absence is served.
    assert read_envelope("tools/call", call(META), HEADERS, None).client_info is None


def test_header_values_decode_base64_only_inside_the_exact_wrapper() -> None:
    assert decode_header_value("=?base64?SGVsbG8=?=") == "Hello"
    assert decode_header_value("SGVsbG8=") == "SGVsbG8="
    assert decode_header_value("=?base64?SGVsbG8=") == "=?base64?SGVsbG8="
    assert decode_header_value("=?base64?SGVsbG8?=") is None  # bad padding
    assert decode_header_value("=?base64?SGVs!!!bG8=?=") is None
    assert decode_header_value("=?base64?5pel5pys?=") == "日本"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_sealed_state_opens_only_for_its_subject_request_and_lifetime() -> None:
    clock = Clock()
    seal = RequestStateSeal([derive_key("k1")], ttl=60, clock=clock)
    params = {"name": "tool", "arguments": {"a": 1}, "_meta": META}
    token = seal.seal({"round": 2}, subject="alice", method="tools/call", params=params)
    assert "round" not in token  # encrypted, not only signed
    retry = {**params, "inputResponses": {"x": {}}, "requestState": token, "_meta": {}}
    assert seal.open(token, subject="alice", method="tools/call", params=retry) == {"round": 2}
    for subject, method, other in [
        ("bob", "tools/call", retry),
        ("alice", "prompts/get", retry),
        ("alice", "tools/call", {**retry, "arguments": {"a": 2}}),
        (None, "tools/call", retry),
    ]:
        with pytest.raises(InvalidRequestState):
            seal.open(token, subject=subject, method=method, params=other)
    for forged in [token + "-TAMPERED", token[:-4] + "AAAA", "rs1.", "rs2." + token[4:], "", 42, None]:
        with pytest.raises(InvalidRequestState):
            seal.open(forged, subject="alice", method="tools/call", params=retry)
    clock.now += 61
    with pytest.raises(InvalidRequestState, match="expired"):
        seal.open(token, subject="alice", method="tools/call", params=retry)


def test_a_rotated_key_still_opens_what_it_sealed_and_a_foreign_key_does_not() -> None:
    clock = Clock()
    old = RequestStateSeal([derive_key("old")], ttl=60, clock=clock)
    token = old.seal({}, subject=None, method="tools/call", params={})
    rotated = RequestStateSeal([derive_key("new"), derive_key("old")], ttl=60, clock=clock)
    assert rotated.open(token, subject=None, method="tools/call", params={}) == {}
    foreign = RequestStateSeal([derive_key("new")], ttl=60, clock=clock)
    with pytest.raises(InvalidRequestState, match="verification"):
        foreign.open(token, subject=None, method="tools/call", params={})


MIRRORED = {"region": "Region", "count": "Count", "dry": "Dry"}


@pytest.mark.parametrize(
    ("arguments", "headers"),
    [
        ({"region": "us-west1"}, {"mcp-param-region": "us-west1"}),
        ({"region": "Hello, 世界"}, {"mcp-param-region": "=?base64?SGVsbG8sIOS4lueVjA==?="}),
        ({"region": "=?base64?SGVsbG8"}, {"mcp-param-region": "=?base64?SGVsbG8"}),  # no suffix: a literal
        ({"count": 42}, {"mcp-param-count": "42"}),
        ({"count": 42}, {"mcp-param-count": "42.0"}),  # integers compare numerically
        ({"dry": False}, {"mcp-param-dry": "false"}),
        ({"region": None}, {}),  # null: no header expected
        ({}, {"mcp-param-region": "anything"}),  # not in the body: nothing to compare
    ],
)
def test_mirrored_parameters_that_match(arguments: dict[str, Any], headers: dict[str, str]) -> None:
    check_param_headers(MIRRORED, arguments, headers)


@pytest.mark.parametrize(
    ("arguments", "headers"),
    [
        ({"region": "us-west1"}, {}),  # the body has it, the header is missing
        ({"region": "us-west1"}, {"mcp-param-region": "eu-west1"}),
        ({"region": "Hello"}, {"mcp-param-region": "=?base64?SGVsbG8?="}),  # bad padding
        ({"region": "Hello"}, {"mcp-param-region": "=?base64?SGVs!!!bG8=?="}),  # not the alphabet
        ({"region": "a\nb"}, {"mcp-param-region": "a\nb"}),  # a control character
        ({"count": 42}, {"mcp-param-count": "42.5"}),
        ({"count": 42}, {"mcp-param-count": "4.2e1"}),
        ({"dry": True}, {"mcp-param-dry": "True"}),
    ],
)
def test_mirrored_parameters_that_do_not_match(arguments: dict[str, Any], headers: dict[str, str]) -> None:
    with pytest.raises(RefserverError) as info:
        check_param_headers(MIRRORED, arguments, headers)
    assert info.value.jsonrpc_code == HEADER_MISMATCH and info.value.http_status == 400


@pytest.mark.parametrize(
    "properties",
    [
        {"a": {"type": "string", "x-mcp-header": ""}},
        {"a": {"type": "string", "x-mcp-header": "Bad Name"}},
        {"a": {"type": "number", "x-mcp-header": "A"}},
        {"a": {"type": "string", "x-mcp-header": "Same"}, "b": {"type": "string", "x-mcp-header": "same"}},
    ],
)
def test_invalid_header_annotations_are_refused_at_start(properties: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="x-mcp-header"):
        check_mirrored_schema("tool", {"type": "object", "properties": properties})
    check_mirrored_schema("tool", {"type": "object", "properties": {"a": {"type": "integer", "x-mcp-header": "A"}}})
