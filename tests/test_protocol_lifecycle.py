"""Sans-IO MCP lifecycle: refserver.protocol.lifecycle version rules and the per-session state machine."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from refserver.errors import INVALID_REQUEST, BadProtocolVersionHeader, InvalidRequest
from refserver.protocol.lifecycle import (
    DEFAULT_HEADER_VERSION,
    LATEST_VERSION,
    LOG_LEVELS,
    SUPPORTED_VERSIONS,
    Lifecycle,
    Phase,
    batch_allowed,
    check_protocol_version_header,
    log_level_allows,
    negotiate_version,
    parse_initialize,
)

CLIENT_INFO = {"name": "unit-test", "version": "1.0"}
CAPABILITIES = {"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": True}}


def init_params(**overrides: Any) -> dict[str, Any]:
    return {
        "protocolVersion": "2025-06-18",
        "capabilities": CAPABILITIES,
        "clientInfo": CLIENT_INFO,
        **overrides,
    }


def test_version_constants() -> None:
    assert SUPPORTED_VERSIONS == ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
    assert LATEST_VERSION == "2025-11-25"
    assert DEFAULT_HEADER_VERSION == "2025-03-26"
    assert LOG_LEVELS == ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


# --- negotiate_version ---


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_negotiate_echoes_supported_version(version: str) -> None:
    assert negotiate_version(version) == version


@pytest.mark.parametrize(
    "requested", ["2099-01-01", "2024-10-07", "", "2025-06-18 ", "latest", None, 20250618, ["2025-06-18"], {}]
)
def test_negotiate_offers_latest_otherwise(requested: object) -> None:
    assert negotiate_version(requested) == "2025-11-25"


# --- MCP-Protocol-Version header ---


def test_missing_header_uses_negotiated_version() -> None:
    assert check_protocol_version_header(None, "2025-06-18") == "2025-06-18"
    assert check_protocol_version_header(None, "2024-11-05") == "2024-11-05"


def test_missing_header_without_negotiated_version_defaults_to_2025_03_26() -> None:
    assert check_protocol_version_header(None, None) == "2025-03-26"


@pytest.mark.parametrize("header", SUPPORTED_VERSIONS)
def test_supported_header_wins_over_negotiated(header: str) -> None:
    assert check_protocol_version_header(header, "2025-06-18") == header
    assert check_protocol_version_header(header, None) == header


@pytest.mark.parametrize("header", ["2099-01-01", "", "2025-06-18 ", "2025-6-18", "garbage"])
def test_unsupported_header_is_rejected(header: str) -> None:
    with pytest.raises(BadProtocolVersionHeader) as info:
        check_protocol_version_header(header, "2025-06-18")
    assert info.value.http_status == 400
    assert info.value.jsonrpc_code == INVALID_REQUEST
    assert repr(header) in info.value.message
    assert "2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25" in info.value.message


# --- batches ---


@pytest.mark.parametrize(
    ("version", "allowed"),
    [
        ("2024-11-05", False),
        ("2025-03-26", True),
        ("2025-06-18", False),
        ("2025-11-25", False),
        (None, False),
    ],
)
def test_batch_allowed_only_for_2025_03_26(version: str | None, allowed: bool) -> None:
    assert batch_allowed(version) is allowed


# --- logging levels ---


def test_no_threshold_allows_everything() -> None:
    for level in LOG_LEVELS:
        assert log_level_allows(None, level) is True


@pytest.mark.parametrize(("threshold", "level"), list(itertools.product(LOG_LEVELS, LOG_LEVELS)))
def test_log_level_ordering(threshold: str, level: str) -> None:
    assert log_level_allows(threshold, level) is (LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold))


def test_log_level_examples() -> None:
    assert log_level_allows("warning", "warning") is True
    assert log_level_allows("warning", "error") is True
    assert log_level_allows("warning", "notice") is False
    assert log_level_allows("debug", "emergency") is True
    assert log_level_allows("emergency", "alert") is False
    assert log_level_allows("emergency", "emergency") is True
    assert [lvl for lvl in LOG_LEVELS if log_level_allows("error", lvl)] == [
        "error",
        "critical",
        "alert",
        "emergency",
    ]


# --- the state machine ---


def initialize(lifecycle: Lifecycle, params: dict[str, Any] | None) -> str:
    """What the 2025 adapter does with an `initialize`: the phase check, the core's parse, the change applied."""
    lifecycle.check_request("initialize")
    change = parse_initialize(params)
    lifecycle.initialized_with(change.protocol_version, dict(change.client_capabilities), dict(change.client_info))
    return change.protocol_version


def test_new_lifecycle() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.phase is Phase.NEW
    assert lifecycle.protocol_version is None
    assert lifecycle.client_info is None
    assert lifecycle.client_capabilities == {}


def test_initialize_then_initialized() -> None:
    lifecycle = Lifecycle()
    assert initialize(lifecycle, init_params()) == "2025-06-18"
    assert lifecycle.phase is Phase.INITIALIZING
    assert lifecycle.protocol_version == "2025-06-18"
    assert lifecycle.client_info == CLIENT_INFO
    assert lifecycle.client_capabilities == CAPABILITIES
    lifecycle.receive_initialized()
    assert lifecycle.phase is Phase.READY
    lifecycle.receive_initialized()
    assert lifecycle.phase is Phase.READY


def test_initialize_with_unknown_version_negotiates_latest() -> None:
    lifecycle = Lifecycle()
    assert initialize(lifecycle, init_params(protocolVersion="1999-01-01")) == "2025-11-25"
    assert lifecycle.protocol_version == "2025-11-25"


def test_initialize_without_version_negotiates_latest() -> None:
    params = init_params()
    del params["protocolVersion"]
    lifecycle = Lifecycle()
    assert initialize(lifecycle, params) == "2025-11-25"


def test_initialized_before_initialize_is_ignored() -> None:
    lifecycle = Lifecycle()
    lifecycle.receive_initialized()
    assert lifecycle.phase is Phase.NEW


@pytest.mark.parametrize("second_phase", ["initializing", "ready"])
def test_double_initialize_is_rejected(second_phase: str) -> None:
    lifecycle = Lifecycle()
    initialize(lifecycle, init_params())
    if second_phase == "ready":
        lifecycle.receive_initialized()
    expected_phase = lifecycle.phase
    with pytest.raises(InvalidRequest, match="session is already initialized"):
        initialize(lifecycle, init_params(protocolVersion="2024-11-05", clientInfo={"name": "other"}))
    assert lifecycle.phase is expected_phase
    assert lifecycle.protocol_version == "2025-06-18"
    assert lifecycle.client_info == CLIENT_INFO


def test_initialize_after_close_is_rejected() -> None:
    lifecycle = Lifecycle()
    lifecycle.close()
    with pytest.raises(InvalidRequest):
        initialize(lifecycle, init_params())
    assert lifecycle.phase is Phase.CLOSED


@pytest.mark.parametrize(
    "params",
    [
        None,
        {},
        {"protocolVersion": "2025-06-18", "clientInfo": CLIENT_INFO},
        {"protocolVersion": "2025-06-18", "capabilities": CAPABILITIES},
        {"capabilities": None, "clientInfo": CLIENT_INFO},
        {"capabilities": [], "clientInfo": CLIENT_INFO},
        {"capabilities": CAPABILITIES, "clientInfo": "unit-test"},
        {"capabilities": CAPABILITIES, "clientInfo": None},
    ],
)
def test_bad_initialize_params_are_rejected_and_phase_stays_new(params: dict[str, Any] | None) -> None:
    lifecycle = Lifecycle()
    with pytest.raises(InvalidRequest) as info:
        initialize(lifecycle, params)
    assert info.value.message == "initialize needs params.capabilities and params.clientInfo objects"
    assert lifecycle.phase is Phase.NEW
    assert lifecycle.protocol_version is None
    assert lifecycle.client_info is None
    assert lifecycle.client_capabilities == {}
    # A later valid initialize still works.
    assert initialize(lifecycle, init_params()) == "2025-06-18"
    assert lifecycle.phase is Phase.INITIALIZING


def test_empty_capabilities_are_accepted() -> None:
    lifecycle = Lifecycle()
    initialize(lifecycle, init_params(capabilities={}))
    assert lifecycle.client_capabilities == {}
    assert lifecycle.phase is Phase.INITIALIZING


@pytest.mark.parametrize("method", ["initialize", "ping"])
def test_check_request_before_initialize_allows_initialize_and_ping(method: str) -> None:
    Lifecycle().check_request(method)


@pytest.mark.parametrize("method", ["tools/list", "tools/call", "resources/read", "logging/setLevel", "Ping"])
def test_check_request_before_initialize_rejects_others(method: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Lifecycle().check_request(method)
    assert info.value.message == f"{method!r} before initialize"


@pytest.mark.parametrize("ready", [False, True])
def test_check_request_after_initialize_allows_everything(ready: bool) -> None:
    lifecycle = Lifecycle()
    initialize(lifecycle, init_params())
    if ready:
        lifecycle.receive_initialized()
    for method in ("tools/list", "tools/call", "ping", "resources/subscribe"):
        lifecycle.check_request(method)


@pytest.mark.parametrize("method", ["ping", "initialize", "tools/list"])
def test_closed_session_rejects_everything(method: str) -> None:
    lifecycle = Lifecycle()
    initialize(lifecycle, init_params())
    lifecycle.receive_initialized()
    lifecycle.close()
    assert lifecycle.phase is Phase.CLOSED
    with pytest.raises(InvalidRequest, match="session is closed"):
        lifecycle.check_request(method)


def test_close_before_initialize() -> None:
    lifecycle = Lifecycle()
    lifecycle.close()
    with pytest.raises(InvalidRequest, match="session is closed"):
        lifecycle.check_request("initialize")
    lifecycle.receive_initialized()
    assert lifecycle.phase is Phase.CLOSED


# --- client capabilities ---


@pytest.mark.parametrize(
    ("capability", "sub", "expected"),
    [
        ("sampling", None, True),
        ("sampling", "tools", False),
        ("elicitation", None, True),
        ("elicitation", "form", True),
        ("elicitation", "url", False),
        ("roots", "listChanged", True),
        ("experimental", None, False),
        ("experimental", "x", False),
        ("Sampling", None, False),
    ],
)
def test_client_supports(capability: str, sub: str | None, expected: bool) -> None:
    lifecycle = Lifecycle()
    initialize(lifecycle, init_params())
    assert lifecycle.client_supports(capability, sub) is expected


def test_client_supports_non_object_capability_has_no_sub_capabilities() -> None:
    lifecycle = Lifecycle()
    initialize(lifecycle, init_params(capabilities={"sampling": True, "roots": None}))
    assert lifecycle.client_supports("sampling") is True
    assert lifecycle.client_supports("sampling", "tools") is False
    assert lifecycle.client_supports("roots") is False


def test_client_supports_nothing_before_initialize() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.client_supports("sampling") is False
    assert lifecycle.client_supports("elicitation", "form") is False
