"""Request parsing for the authorization server's endpoints, without Quart: forms, client credentials,
media types, and the OAuth error body. Each failure is an `OAuthError` with the status to send."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

from refserver.errors import OAuthError
from refserver.oauth.clients import ClientCredentials

MAX_FORM_BYTES: Final = 16 * 1024
"""Token, introspection, revocation and consent forms hold a few short fields (largest: a JWT)."""
MAX_JSON_BYTES: Final = 64 * 1024
"""A registration document: ten redirect URIs and a few short strings fit many times over."""
MAX_FORM_FIELDS: Final = 32
"""More fields than any OAuth request has; a bound on the work a hostile form can cause."""
FORM_TYPE: Final = "application/x-www-form-urlencoded"
JSON_TYPE: Final = "application/json"
BASIC_REALM: Final = 'Basic realm="refserver"'


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def require_media_type(header: str | None, expected: str) -> None:
    if media_type(header) != expected:
        raise OAuthError("invalid_request", f"Content-Type must be {expected}", status=415)


def single_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 sec. 3.1 and 3.2: parameters MUST NOT be included more than once."""
    values: dict[str, str] = {}
    for count, (name, value) in enumerate(pairs):
        if count >= MAX_FORM_FIELDS:
            raise OAuthError("invalid_request", f"too many parameters (at most {MAX_FORM_FIELDS})")
        if name in values:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        values[name] = value
    return values


def parse_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the form body is not valid UTF-8 form encoding") from exc
    # An empty value is an absent parameter (RFC 6749 sec. 3.1).
    return {name: value for name, value in single_values(pairs).items() if value != ""}


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_client_metadata", "the body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise OAuthError("invalid_client_metadata", "the client metadata must be a JSON object")
    return document


def parse_basic(header: str) -> tuple[str, str]:
    """RFC 6749 sec. 2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "only HTTP Basic client authentication is supported", status=401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401) from exc
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon or not raw_id:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
    return unquote_plus(raw_id), unquote_plus(raw_secret)


def client_credentials(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    """Credentials from HTTP Basic or from the form; using both at once is refused (RFC 6749 sec. 2.3)."""
    if authorization is None:
        return ClientCredentials(form.get("client_id"), form.get("client_secret"), via_basic=False)
    client_id, secret = parse_basic(authorization)
    if "client_secret" in form:
        raise OAuthError("invalid_request", "use one client authentication method: Basic or the form, not both")
    if form.get("client_id", client_id) != client_id:
        raise OAuthError("invalid_request", "client_id in the form differs from the Basic credentials")
    return ClientCredentials(client_id, secret or None, via_basic=True)


def error_body(error: str, description: str) -> str:
    return json.dumps({"error": error, "error_description": description})
