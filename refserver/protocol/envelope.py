"""The 2026-07-28 era, sans-IO: which era a request speaks, and the per-request envelope of the stateless one.

A 2026 request carries everything a 2025 session learnt in `initialize` in its own `params._meta`: the
protocol version, the client's capabilities and (optionally) its info, a log level, trace context. It also
repeats the version, the method and the name it targets in HTTP headers so that proxies can route on them; the
body is the truth, a header that disagrees with it is refused.

`read_envelope` runs the spec's checks in the order the spec's examples (and the official SDKs) give them,
first failure wins: the envelope's required keys (-32602), the routing headers (-32020), the version (-32022).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from refserver.errors import HeaderMismatch, InvalidParams, UnsupportedProtocolVersion
from refserver.protocol.core import CacheHint, RequestMeta, TraceContext
from refserver.protocol.lifecycle import LOG_LEVELS, SUPPORTED_VERSIONS

STATELESS_VERSIONS: Final = ("2026-07-28",)
"""Revisions served without a session, newest last."""
ALL_VERSIONS: Final = (*SUPPORTED_VERSIONS, *STATELESS_VERSIONS)

PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_KEY: Final = "io.modelcontextprotocol/subscriptionId"

VERSION_HEADER: Final = "mcp-protocol-version"
METHOD_HEADER: Final = "mcp-method"
NAME_HEADER: Final = "mcp-name"

NAME_PARAM: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    # The tasks extension's methods name their task (SEP-2663, "HTTP routing").
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
"""The methods whose target is repeated in `Mcp-Name`, and the param that names it."""

REMOVED_METHODS: Final = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
"""2025 methods the stateless revision dropped: a 2026 request for one is answered as an unknown method."""

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""RFC 9110 `1*tchar`."""
_VISIBLE_ASCII: Final = re.compile(r"[\x20-\x7e\t]*")
_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_BASE64_HEADER: Final = re.compile(r"^=\?base64\?(?P<value>.*)\?=$", re.DOTALL)


class Era(enum.Enum):
    SESSION = "2025"
    """`initialize`, `Mcp-Session-Id`, the GET stream: the 2025-11-25 revision and before."""
    STATELESS = "2026"
    """Every request self-contained: the 2026-07-28 revision."""


def era_of(session_id: str | None, version_header: str | None, body_meta: object) -> Era:
    """Decide the era of one request before anything else looks at it.

    A session id means 2025, whatever else the request says (a 2025 session's requests behave exactly as they
    always have). Otherwise a version header names the era outright: an unknown one goes to the stateless side,
    which answers it with the versions it serves. Without either, a body whose `_meta` carries the 2026
    protocol-version key is a 2026 request that forgot its header (and is told so); anything else is 2025,
    where it must be an `initialize`.
    """
    if session_id:
        return Era.SESSION
    if version_header is not None:
        return Era.SESSION if version_header in SUPPORTED_VERSIONS else Era.STATELESS
    if isinstance(body_meta, Mapping) and PROTOCOL_VERSION_KEY in body_meta:
        return Era.STATELESS
    return Era.SESSION


def body_meta(params: Mapping[str, Any] | None) -> object:
    return params.get("_meta") if params is not None else None


def decode_header_value(value: str | None) -> str | None:
    """`Mcp-Name` and `Mcp-Param-*` values that are not plain ASCII travel as `=?base64?...?=` (SEP-2243)."""
    if value is None:
        return None
    found = _BASE64_HEADER.match(value.strip())
    if found is None:
        return value.strip()
    try:
        return base64.b64decode(found.group("value"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def read_envelope(
    method: str, params: Mapping[str, Any] | None, headers: Mapping[str, str], subject: str | None
) -> RequestMeta:
    """The request's metadata from its `_meta`, after the spec's checks; raises the error of the first that fails."""
    meta = body_meta(params)
    if not isinstance(meta, Mapping):
        raise InvalidParams(
            f"params._meta must be an object carrying {PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r}"
        )
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        raise InvalidParams(f"params._meta is missing {', '.join(missing)}")
    version = meta[PROTOCOL_VERSION_KEY]
    check_routing_headers(method, params, headers, version)
    if not isinstance(version, str):
        raise InvalidParams(f"{PROTOCOL_VERSION_KEY} must be a string")
    if version not in STATELESS_VERSIONS:
        raise UnsupportedProtocolVersion(
            f"Unsupported protocol version {version!r}",
            data={"supported": list(STATELESS_VERSIONS), "requested": version},
        )
    capabilities = meta[CLIENT_CAPABILITIES_KEY]
    if not isinstance(capabilities, Mapping):
        raise InvalidParams(f"{CLIENT_CAPABILITIES_KEY} must be an object")
    client_info = meta.get(CLIENT_INFO_KEY)
    if client_info is not None and not isinstance(client_info, Mapping):
        raise InvalidParams(f"{CLIENT_INFO_KEY} must be an object")
    log_level = meta.get(LOG_LEVEL_KEY)
    if log_level is not None and log_level not in LOG_LEVELS:
        raise InvalidParams(f"{LOG_LEVEL_KEY} must be one of {', '.join(LOG_LEVELS)}")
    return RequestMeta(
        protocol_version=version,
        client_capabilities=dict(capabilities),
        client_info=dict(client_info) if client_info is not None else None,
        log_level=log_level,
        subject=subject,
        trace=_trace_context(meta),
    )


def check_routing_headers(
    method: str, params: Mapping[str, Any] | None, headers: Mapping[str, str], version: object
) -> None:
    if headers.get(VERSION_HEADER) != version:
        raise HeaderMismatch("MCP-Protocol-Version header does not match params._meta protocol version")
    if headers.get(METHOD_HEADER) != method:
        raise HeaderMismatch("Mcp-Method header does not match the request's method")
    name_param = NAME_PARAM.get(method)
    if name_param is not None:
        named = (params or {}).get(name_param)
        if named is not None and decode_header_value(headers.get(NAME_HEADER)) != named:
            raise HeaderMismatch(f"Mcp-Name header does not match params.{name_param}")


def mirrored_params(input_schema: Mapping[str, Any]) -> dict[str, str]:
    """A tool's parameters that its schema mirrors into headers (`x-mcp-header`, SEP-2243): param -> header name."""
    properties = input_schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {
        name: spec["x-mcp-header"]
        for name, spec in properties.items()
        if isinstance(spec, Mapping) and isinstance(spec.get("x-mcp-header"), str)
    }


def check_param_headers(mirrored: Mapping[str, str], arguments: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Each mirrored argument present in the body must be repeated, equal, in its `Mcp-Param-<name>` header."""
    for param, header in mirrored.items():
        value = arguments.get(param)
        if value is None:
            continue
        sent = headers.get(f"mcp-param-{header.lower()}")
        if sent is None:
            raise HeaderMismatch(f"Mcp-Param-{header} header is required: the body sets arguments.{param}")
        if _VISIBLE_ASCII.fullmatch(sent) is None:
            raise HeaderMismatch(f"Mcp-Param-{header} header has characters a header value may not carry")
        decoded = decode_header_value(sent)
        if decoded is None:
            raise HeaderMismatch(f"Mcp-Param-{header} header is not valid =?base64?...?= (padding or alphabet)")
        if not _header_matches(value, decoded):
            raise HeaderMismatch(f"Mcp-Param-{header} header does not match arguments.{param}")


def _header_matches(value: Any, header: str) -> bool:
    """Whether a header carries `value` (SEP-2243 value encoding); integers compare numerically (`42` = `42.0`)."""
    if isinstance(value, bool):
        return header == ("true" if value else "false")
    if isinstance(value, int):
        if _DECIMAL.fullmatch(header) is None:
            return False
        whole, _, fraction = header.partition(".")
        return int(whole) == value and fraction.strip("0") == ""
    if isinstance(value, str):
        return header == value
    return header == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def check_mirrored_schema(tool_name: str, input_schema: Mapping[str, Any]) -> None:
    """Refuse to serve a tool whose `x-mcp-header` annotations break the revision's rules (clients drop such
    tools): a header-name token, unique ignoring case, on a primitive property reachable through `properties`."""
    seen: set[str] = set()
    properties = input_schema.get("properties")
    for name, spec in properties.items() if isinstance(properties, Mapping) else ():
        header = spec.get("x-mcp-header") if isinstance(spec, Mapping) else None
        if header is None:
            continue
        if not isinstance(header, str) or _TOKEN.fullmatch(header) is None:
            raise ValueError(f"tool {tool_name}: x-mcp-header of {name!r} must be an HTTP field-name token")
        if header.lower() in seen:
            raise ValueError(f"tool {tool_name}: x-mcp-header {header!r} is used twice")
        seen.add(header.lower())
        if spec.get("type") not in ("string", "integer", "boolean"):
            raise ValueError(f"tool {tool_name}: x-mcp-header on {name!r} needs a string, integer or boolean type")


def _trace_context(meta: Mapping[str, Any]) -> TraceContext | None:
    fields = {key: meta.get(key) for key in ("traceparent", "tracestate", "baggage")}
    if not any(isinstance(value, str) for value in fields.values()):
        return None
    return TraceContext(**{key: value if isinstance(value, str) else None for key, value in fields.items()})


COMPLETE: Final = "complete"
INPUT_REQUIRED: Final = "input_required"


def stateless_result(
    method: str, data: Mapping[str, Any], server_info: Mapping[str, Any], cache: CacheHint | None
) -> dict[str, Any]:
    """A complete result as the 2026 revision shapes it: typed, identifying the server, with caching hints
    where the method's result is cacheable."""
    shaped = dict(data)
    shaped.setdefault("resultType", COMPLETE)
    shaped["_meta"] = {**(shaped.get("_meta") or {}), SERVER_INFO_KEY: server_info}
    if cache is not None:
        shaped["ttlMs"] = cache.ttl_ms
        shaped["cacheScope"] = cache.scope
    return shaped


def input_required_result(
    input_requests: Mapping[str, Mapping[str, Any]], request_state: str | None, server_info: Mapping[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {"resultType": INPUT_REQUIRED, "_meta": {SERVER_INFO_KEY: server_info}}
    if input_requests:
        result["inputRequests"] = dict(input_requests)
    if request_state is not None:
        result["requestState"] = request_state
    return result
