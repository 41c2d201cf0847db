"""How the value of one `REFSERVER_*` variable is read: each parser takes the raw string and returns the
setting's value or raises ValueError with what it must be (`config.py` names the variable in the error)."""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import urlsplit

AUTH_MODES: Final = ("embedded", "jwt", "introspection", "none")
"""embedded: our own authorization server in this process; jwt / introspection: an external one;
none: no authentication at all (local development only)."""

MAX_CODE_TTL: Final = 600.0
"""OAuth 2.1 (and RFC 6749 sec. 4.1.2) want authorization codes to live at most 10 minutes."""

FEATURE_MODULES: Final = ("reference", "conformance")
LOG_FORMATS: Final = ("json", "text")
SWITCH: Final = ("off", "on")


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def optional_str(raw: str) -> str | None:
    return raw or None


def auth_mode(raw: str) -> str:
    if raw not in AUTH_MODES:
        raise ValueError(f"must be one of {', '.join(AUTH_MODES)}")
    return raw


def code_ttl(raw: str) -> float:
    value = positive_float(raw)
    if value > MAX_CODE_TTL:
        raise ValueError(f"must be at most {MAX_CODE_TTL:g} seconds")
    return value


def scopes(raw: str) -> tuple[str, ...]:
    scopes = tuple(raw.replace(",", " ").split())
    if not scopes or any(not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in s) for s in scopes):
        raise ValueError("must be space- or comma-separated scope tokens (RFC 6749 sec. 3.3)")
    return scopes


def optional_url(raw: str) -> str | None:
    return base_url(raw) if raw else None


def feature_modules(raw: str) -> tuple[str, ...]:
    """Built-in names, or dotted module paths of your own (each module exposes `build_catalog()`)."""
    modules = csv(raw)
    unknown = [m for m in modules if m not in FEATURE_MODULES and "." not in m]
    if unknown:
        raise ValueError(
            f"unknown feature module(s) {unknown}; built in: {', '.join(FEATURE_MODULES)}, "
            "or a dotted module path such as mycompany.mcp_features"
        )
    return modules


def base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise ValueError("must not have a query or fragment (the endpoints are appended to its path)")
    if parts.username is not None:
        raise ValueError("must not contain user info")
    parts.port  # noqa: B018 -- raises ValueError for a non-numeric or out-of-range port
    return raw.rstrip("/")


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"must be one of {', '.join(sorted(logging.getLevelNamesMapping()))}")
    return level


def log_format(raw: str) -> str:
    value = raw.lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
    return value


def switch(raw: str) -> str:
    value = raw.lower()
    if value not in SWITCH:
        raise ValueError("must be off or on")
    return value


def boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "on", "1"):
        return True
    if value in ("false", "off", "0"):
        return False
    raise ValueError("must be true or false")


def metrics(raw: str) -> str:
    """`off`, `on` (GET /metrics on the main port) or `host:port` (a separate listener; `[::1]:9100` for IPv6)."""
    if raw.lower() in SWITCH:
        return raw.lower()
    host, sep, port = raw.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    if not sep or not name or (":" in name and not bracketed) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be off, on, or host:port of a separate listener (e.g. 127.0.0.1:9100)")
    return raw
