"""Redirect URIs: which ones a client may register, which presented one matches, and the redirect back.

An /authorize failure either redirects the person back to the client with an error (`RedirectingOAuthError`)
or, when the redirect target itself cannot be trusted, stays on our own page (`AuthorizePageError`).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import SplitResult, urlencode, urlsplit

import attrs

from refserver.errors import OAuthError

LOOPBACK_REDIRECT_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
"""RFC 8252 sec. 7.3: native apps listen on a loopback port chosen at run time."""


class AuthorizePageError(Exception):
    """An /authorize failure that must NOT redirect (unknown client, bad redirect URI, bad state)."""


class RedirectingOAuthError(OAuthError):
    """An /authorize error reported to the client by redirecting the person back to it."""

    def __init__(self, error: str, description: str, redirect_url: str) -> None:
        super().__init__(error, description, status=302)
        self.redirect_url = redirect_url


def split_uri(uri: str) -> SplitResult | None:
    """`urlsplit` plus what it leaves unchecked: a host, and a port that is a number in range."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return None
    return parts if parts.hostname else None


def is_loopback_http(uri: str) -> bool:
    parts = split_uri(uri)
    return parts is not None and parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_REDIRECT_HOSTS


def redirect_uri_matches(registered: str, presented: str) -> bool:
    """Exact match, except that a loopback redirect may use any port (RFC 8252 sec. 7.3)."""
    if presented == registered:
        return split_uri(presented) is not None
    if not (is_loopback_http(registered) and is_loopback_http(presented)):
        return False
    a, b = urlsplit(registered), urlsplit(presented)
    return (a.hostname, a.path, a.query) == (b.hostname, b.path, b.query) and not b.fragment


def registrable_redirect_uri(uri: str) -> bool:
    """OAuth 2.1 sec. 2.3.1: https, or loopback http for native apps; never a fragment."""
    parts = split_uri(uri)
    if parts is None or parts.fragment:
        return False
    return parts.scheme == "https" or is_loopback_http(uri)


APPLICATION_TYPES: Final = ("web", "native")


def check_redirect_uris(redirect_uris: list[object], application_type: object) -> str:
    """The client's `application_type` (SEP-837, OpenID Connect Dynamic Registration sec. 2) and the redirect URIs
    it allows; raises OAuthError. `web`: https on a host other than loopback. `native`: loopback http on any port
    (RFC 8252 sec. 7.3; private-use schemes are not supported here). Omitted, it is inferred (`native` when every
    URI is loopback, else `web`) and not enforced: OIDC's default, `web`, would refuse the loopback redirects that
    clients predating SEP-837 register."""
    if not all(isinstance(uri, str) for uri in redirect_uris):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be strings")
    uris = [str(uri) for uri in redirect_uris]
    bad = [uri for uri in uris if not registrable_redirect_uri(uri)]
    if bad:
        raise OAuthError("invalid_redirect_uri", f"redirect URIs must be https or loopback http: {bad[0]}")
    native = [is_loopback_http(uri) for uri in uris]
    if application_type is None:
        return "native" if all(native) else "web"
    if application_type not in APPLICATION_TYPES:
        raise OAuthError("invalid_client_metadata", 'application_type must be "web" or "native"')
    if application_type == "web" and any(native):
        raise OAuthError("invalid_redirect_uri", "a web client's redirect URIs must be https on a non-loopback host")
    if application_type == "native" and not all(native):
        raise OAuthError("invalid_redirect_uri", "a native client's redirect URIs must be loopback http")
    return str(application_type)


@attrs.frozen
class RedirectTarget:
    """Where one authorization request goes back to, carrying its `state` and our issuer (RFC 9207)."""

    redirect_uri: str
    state: str | None
    issuer: str

    def _url(self, params: dict[str, str]) -> str:
        if self.state is not None:
            params["state"] = self.state
        params["iss"] = self.issuer  # RFC 9207: lets the client detect mix-up attacks
        separator = "&" if urlsplit(self.redirect_uri).query else "?"
        return f"{self.redirect_uri}{separator}{urlencode(params)}"

    def success(self, code: str) -> str:
        return self._url({"code": code})

    def error(self, error: str, description: str) -> RedirectingOAuthError:
        return RedirectingOAuthError(error, description, self._url({"error": error, "error_description": description}))
