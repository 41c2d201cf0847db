"""The resource server's side of OAuth: one `TokenVerifier` interface, three ways to check a bearer token.

- `EmbeddedVerifier`: our own `AuthorizationServer` in this process (signature, issuer, expiry and
  revocation through its store), plus the audience (RFC 8707).
- `JwtVerifier`: an external authorization server's JWT access tokens (RFC 9068), checked here against its
  JWKS, found through its metadata (RFC 8414). Revocation is checked through the `OAuthStore` when one is
  shared with the authorization server (both processes on one Redis, the seed's topology). Without a shared
  store a revoked access token is honoured until its `exp`: keep access tokens short-lived in that setup.
- `IntrospectionVerifier`: RFC 7662 at the external authorization server; active answers are cached for at
  most `cache_ttl` and never beyond the token's `exp`, so a revocation takes effect within `cache_ttl`.

The external modes watch the authorization server: `run` probes its metadata every few seconds. While it
cannot be reached `state` is "degraded" and `verify` raises `AuthServerUnavailable` (503, retryable); the
next successful probe makes it "ok" again, without a restart.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, Protocol, TypeGuard
from urllib.parse import quote_plus, urlsplit

import httpx
import trio
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet

from refserver.config import Settings
from refserver.errors import AuthServerUnavailable, ConfigError, Unauthorized
from refserver.oauth.models import AccessInfo
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.store import OAuthStore
from refserver.oauth.tokencache import VerifiedTokenCache

logger = logging.getLogger(__name__)

State = Literal["ok", "degraded"]

BEARER_TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 sec. 2.1 `b64token`: the only characters a bearer token may have."""
MAX_TOKEN_LENGTH: Final = 8192
"""Longer tokens are refused before any parsing or network call (ours are well under 1 KiB)."""
ALGORITHMS: Final = ("ES256", "RS256", "Ed25519", "EdDSA")
"""Asymmetric signatures only: an HMAC or `none` token could be forged with public material."""
ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068 sec. 4: the `typ` that tells an access token from an ID token signed by the same keys."""
KEY_TYPES: Final = frozenset({"EC", "RSA", "OKP"})
NOT_BEFORE_LEEWAY: Final = 30
"""Seconds a token's `nbf` may lie in our future: the issuer's clock may run a little ahead of ours. `exp` gets
no leeway: revocation markers in a shared store live exactly until `exp`, so a token accepted after its `exp`
could be a revoked one whose marker is already gone."""
HTTP_TIMEOUT: Final = 3.0
"""Whole-call limit (connect, send, read) of every request to the authorization server."""
MAX_RESPONSE_BYTES: Final = 256 * 1024
"""Metadata, JWKS and introspection answers are a few KiB; a larger body is a misbehaving server."""
PROBE_INTERVAL: Final = 5.0
"""Seconds between availability probes while the authorization server answers."""
PROBE_RETRY_INTERVAL: Final = 1.0
"""Seconds between probes while it does not: a recovery is noticed within about a second."""
JWKS_REFETCH_MIN_INTERVAL: Final = 10.0
"""An unknown `kid` refetches the JWKS at most once per this many seconds (random kids cannot flood the AS)."""
JWKS_MAX_AGE: Final = 3600.0
"""The probe refetches a JWKS this old, so keys the authorization server withdrew stop verifying."""
MAX_JWKS_KEYS: Final = 32
"""Keys taken from one JWKS document; the rest are ignored (a key set is a handful of keys)."""
INTROSPECTION_CACHE_MAX_ENTRIES: Final = 10_000
"""LRU bound of the introspection cache: at most about 10k x 0.5 KiB = 5 MiB."""


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> AccessInfo:
        """The token's facts; raises Unauthorized for any token we must refuse (bad, expired, revoked,
        foreign audience or issuer) and AuthServerUnavailable when an external server cannot be asked."""
        ...

    @property
    def state(self) -> State: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (the availability probe); start it with `nursery.start`."""
        ...

    def statistics(self) -> dict[str, Any]: ...


def check_token_shape(token: str) -> None:
    if not token or len(token) > MAX_TOKEN_LENGTH or not BEARER_TOKEN.fullmatch(token):
        raise Unauthorized("the bearer token is malformed")


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def access_info(
    claims: Mapping[str, Any], *, issuer: str, resource: str, now: float, require_issuer: bool
) -> AccessInfo:
    """Check the claims of a JWT or of an introspection answer and extract what the server needs."""
    iss = claims.get("iss")
    if iss != issuer and (require_issuer or iss is not None):
        raise Unauthorized("the token was issued by another authorization server")
    aud = claims.get("aud")
    if isinstance(aud, list):
        audience = tuple(a for a in aud if isinstance(a, str))
    else:
        audience = (aud,) if isinstance(aud, str) else ()
    if resource not in audience:
        raise Unauthorized("the token was not issued for this resource (audience mismatch)")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not _number(exp):
        raise Unauthorized("the token has no expiry")
    if exp <= now:
        raise Unauthorized("the token has expired")
    if nbf is not None and (not _number(nbf) or nbf > now + NOT_BEFORE_LEEWAY):
        raise Unauthorized("the token is not valid yet")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("the token names no subject")
    client_id = claims.get("client_id", claims.get("azp"))
    scope, jti, grant_id = claims.get("scope"), claims.get("jti"), claims.get("grant_id")
    return AccessInfo(
        subject=subject,
        client_id=client_id if isinstance(client_id, str) else "",
        scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        expires_at=int(exp),
        token_id=jti if isinstance(jti, str) else "",
        audience=audience,
        grant_id=grant_id if isinstance(grant_id, str) else None,
    )


class _Counters:
    def __init__(self, *names: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter(
            dict.fromkeys(("accepted", "rejected", "unavailable", *names), 0)
        )

    async def outcome(self, verify: Callable[[], Awaitable[AccessInfo]]) -> AccessInfo:
        try:
            info = await verify()
        except Unauthorized:
            self.counts["rejected"] += 1
            raise
        except AuthServerUnavailable:
            self.counts["unavailable"] += 1
            raise
        self.counts["accepted"] += 1
        return info


class EmbeddedVerifier:
    """Tokens of the `AuthorizationServer` running in this process."""

    def __init__(self, server: AuthorizationServer, *, resource: str, cache: VerifiedTokenCache | None = None) -> None:
        self._server = server
        self._resource = resource
        self._counters = _Counters()
        self.cache = cache or VerifiedTokenCache(clock=server.clock)

    @property
    def state(self) -> State:
        return "ok"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing to watch: the authorization server is us

    async def verify(self, token: str) -> AccessInfo:
        return await self._counters.outcome(lambda: self._verify(token))

    async def _verify(self, token: str) -> AccessInfo:
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        check_token_shape(token)
        info = await self._server.decode_access_token(token)
        if info is None:
            raise Unauthorized("the token is invalid, expired or revoked")
        if self._resource not in info.audience:
            raise Unauthorized("the token was not issued for this resource (audience mismatch)")
        self.cache.put(token, info)
        return info

    def statistics(self) -> dict[str, Any]:
        return {
            "mode": "embedded",
            "state": self.state,
            **self._counters.counts,
            "cache": self.cache.statistics(),
        }


class _Unreachable(AuthServerUnavailable):
    """A network-level failure (connect, timeout, broken connection): the server is degraded until a probe."""


class _RemoteVerifier:
    """What the jwt and introspection modes share: bounded HTTP calls, metadata and the availability probe."""

    mode: str = ""

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        http: httpx.AsyncClient,
        clock: Callable[[], float],
        probe_interval: float,
        probe_retry_interval: float,
        http_timeout: float,
    ) -> None:
        self.issuer = issuer
        self.resource = resource
        self._http = http
        self._clock = clock
        self._probe_interval = probe_interval
        self._probe_retry_interval = probe_retry_interval
        self._http_timeout = http_timeout
        self._state: State = "ok"
        self._state_changed = trio.Event()
        self._metadata: dict[str, Any] | None = None
        self._counters = _Counters("probes", "jwks_fetches" if self.mode == "jwt" else "introspections")

    @property
    def state(self) -> State:
        return self._state

    @property
    def metadata_url(self) -> str:
        """RFC 8414 sec. 3.1: the well-known segment goes between the host and the issuer's path."""
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe once (so `state` is known when started), then keep probing; never returns."""
        await self._probe()
        task_status.started()
        while True:
            if self._state == "ok":
                with trio.move_on_after(self._probe_interval):
                    await self.wait_state("degraded")  # a verify() that met a network failure wakes us early
            if self._state == "degraded":
                await trio.sleep(self._probe_retry_interval)
            await self._probe()

    async def wait_state(self, state: State) -> None:
        while self._state != state:
            await self._state_changed.wait()

    async def verify(self, token: str) -> AccessInfo:
        return await self._counters.outcome(lambda: self._checked(token))

    async def _checked(self, token: str) -> AccessInfo:
        check_token_shape(token)
        if self._state == "degraded":
            raise AuthServerUnavailable("the authorization server cannot be reached; try again shortly")
        try:
            return await self._verify(token)
        except _Unreachable as exc:
            self._set_state("degraded", str(exc))
            raise

    async def _verify(self, token: str) -> AccessInfo:
        raise NotImplementedError

    async def _probe(self) -> None:
        self._counters.counts["probes"] += 1
        try:
            await self._refresh_metadata()
            await self._after_probe()
        except AuthServerUnavailable as exc:
            self._set_state("degraded", str(exc))
        else:
            self._set_state("ok", "it answers again")

    async def _after_probe(self) -> None:
        """Extra upkeep while the server answers (the JWKS refresh)."""

    def _set_state(self, state: State, reason: str) -> None:
        if state != self._state:
            log = logger.warning if state == "degraded" else logger.info
            log("authorization server %s is %s: %s", self.issuer, state, reason)
            self._state = state
            self._state_changed.set()
            self._state_changed = trio.Event()

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """One bounded request: (status, parsed JSON body or None). Network failures raise `_Unreachable`."""
        body = bytearray()
        try:
            with trio.fail_after(self._http_timeout):
                async with self._http.stream(method, url, timeout=self._http_timeout, **kwargs) as response:
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            raise AuthServerUnavailable(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
                    status = response.status_code
        except (httpx.HTTPError, httpx.StreamError, trio.TooSlowError) as exc:
            raise _Unreachable(f"{method} {url} failed: {exc!r}") from exc
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    async def _refresh_metadata(self) -> dict[str, Any]:
        status, document = await self._call("GET", self.metadata_url, headers={"Accept": "application/json"})
        if status != 200 or not isinstance(document, dict):
            raise AuthServerUnavailable(f"{self.metadata_url} answered HTTP {status} without a JSON object")
        if document.get("issuer") != self.issuer:
            # RFC 8414 sec. 3.3: a mismatch means misconfiguration or an impersonation attempt.
            raise AuthServerUnavailable(f"the metadata names issuer {document.get('issuer')!r}, not {self.issuer!r}")
        self._metadata = document
        return document

    async def _endpoint(self, name: str, configured: str | None) -> str:
        if configured:
            return configured
        metadata = self._metadata or await self._refresh_metadata()
        url = metadata.get(name)
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise AuthServerUnavailable(f"the authorization server metadata has no usable {name}")
        return url

    def statistics(self) -> dict[str, Any]:
        return {"mode": self.mode, "state": self._state, "issuer": self.issuer, **self._counters.counts}


class JwtVerifier(_RemoteVerifier):
    """JWT access tokens of an external authorization server, verified locally against its JWKS."""

    mode = "jwt"

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        http: httpx.AsyncClient,
        jwks_url: str | None = None,
        revocations: OAuthStore | None = None,
        clock: Callable[[], float] = time.time,
        probe_interval: float = PROBE_INTERVAL,
        probe_retry_interval: float = PROBE_RETRY_INTERVAL,
        http_timeout: float = HTTP_TIMEOUT,
        jwks_refetch_min_interval: float = JWKS_REFETCH_MIN_INTERVAL,
    ) -> None:
        super().__init__(
            issuer=issuer,
            resource=resource,
            http=http,
            clock=clock,
            probe_interval=probe_interval,
            probe_retry_interval=probe_retry_interval,
            http_timeout=http_timeout,
        )
        self._jwks_url = jwks_url
        self._revocations = revocations
        self._refetch_min_interval = jwks_refetch_min_interval
        self._keys: KeySet | None = None
        self._keys_fetched_at = -math.inf
        self._last_kid_refetch = -math.inf
        self._fetch_lock = trio.Lock()

    async def _after_probe(self) -> None:
        if self._keys is None or trio.current_time() - self._keys_fetched_at >= JWKS_MAX_AGE:
            await self._fetch_keys()

    async def _keyset(self) -> KeySet:
        if self._keys is None:
            async with self._fetch_lock:
                if self._keys is None:  # not fetched by another task while this one waited
                    await self._fetch_keys()
        assert self._keys is not None
        return self._keys

    async def _fetch_keys(self) -> None:
        url = await self._endpoint("jwks_uri", self._jwks_url)
        status, document = await self._call("GET", url, headers={"Accept": "application/json"})
        entries = document.get("keys") if isinstance(document, dict) else None
        if status != 200 or not isinstance(entries, list):
            raise AuthServerUnavailable(f"{url} answered HTTP {status} without a JWKS")
        keys: list[Key] = []
        for entry in entries[:MAX_JWKS_KEYS]:
            if not isinstance(entry, dict) or entry.get("kty") not in KEY_TYPES or entry.get("use", "sig") != "sig":
                continue
            try:
                keys.append(JWKRegistry.import_key(entry))
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                logger.warning("ignoring an unusable key in %s: %r", url, exc)
        self._counters.counts["jwks_fetches"] += 1
        self._keys = KeySet(keys)
        self._keys_fetched_at = trio.current_time()

    async def _verify(self, token: str) -> AccessInfo:
        try:
            header = jws.extract_compact(token.encode()).protected if token.count(".") == 2 else None
        except (JoseError, ValueError):
            header = None
        if not isinstance(header, dict):
            raise Unauthorized("the token is not a signed JWT")
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized(f"the token's algorithm must be one of {', '.join(ALGORITHMS)}")
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise Unauthorized("the token is not a JWT access token (RFC 9068 typ at+jwt)")
        keys = await self._keyset()
        kid = header.get("kid")
        if isinstance(kid, str) and not any(key.kid == kid for key in keys):
            keys = await self._refetch_for(kid)
        try:
            claims = jwt.decode(token, keys, algorithms=list(ALGORITHMS)).claims
        except (JoseError, ValueError) as exc:
            raise Unauthorized("the token's signature does not verify") from exc
        info = access_info(claims, issuer=self.issuer, resource=self.resource, now=self._clock(), require_issuer=True)
        if self._revocations is not None and await self._revocations.is_revoked(info.token_id, info.grant_id):
            raise Unauthorized("the token has been revoked")
        return info

    async def _refetch_for(self, kid: str) -> KeySet:
        """A key we do not know: the server may have rotated. Refetch, but rarely (the kid is attacker-chosen)."""
        now = trio.current_time()
        if now - self._last_kid_refetch >= self._refetch_min_interval:
            self._last_kid_refetch = now
            async with self._fetch_lock:
                await self._fetch_keys()
        assert self._keys is not None
        if not any(key.kid == kid for key in self._keys):
            raise Unauthorized("the token was signed with an unknown key")
        return self._keys

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "keys": len(self._keys.keys) if self._keys else 0,
            "revocation_checks": self._revocations is not None,
        }


class IntrospectionVerifier(_RemoteVerifier):
    """RFC 7662 introspection at an external authorization server, with a short-lived bounded cache."""

    mode = "introspection"

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        http: httpx.AsyncClient,
        introspection_url: str | None,
        client_id: str,
        client_secret: str,
        cache_ttl: float,
        cache_max_entries: int = INTROSPECTION_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
        probe_interval: float = PROBE_INTERVAL,
        probe_retry_interval: float = PROBE_RETRY_INTERVAL,
        http_timeout: float = HTTP_TIMEOUT,
    ) -> None:
        super().__init__(
            issuer=issuer,
            resource=resource,
            http=http,
            clock=clock,
            probe_interval=probe_interval,
            probe_retry_interval=probe_retry_interval,
            http_timeout=http_timeout,
        )
        self._introspection_url = introspection_url
        # RFC 6749 sec. 2.3.1: both halves are form-encoded before the Basic encoding.
        pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        self._authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        self._cache_ttl = cache_ttl
        self._cache_max_entries = cache_max_entries
        # sha256(token) -> (facts, wall-clock deadline); the token itself is never kept.
        self._cache: collections.OrderedDict[str, tuple[AccessInfo, float]] = collections.OrderedDict()

    async def _verify(self, token: str) -> AccessInfo:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            if self._clock() < cached[1]:
                self._cache.move_to_end(key)
                self._counters.counts["cache_hits"] += 1
                return cached[0]
            del self._cache[key]
        url = await self._endpoint("introspection_endpoint", self._introspection_url)
        self._counters.counts["introspections"] += 1
        status, answer = await self._call(
            "POST",
            url,
            data={"token": token, "token_type_hint": "access_token"},
            headers={"Authorization": self._authorization, "Accept": "application/json"},
        )
        if status != 200 or not isinstance(answer, dict):
            if status in (401, 403):
                logger.error("the authorization server refused our introspection credentials (HTTP %s)", status)
            raise AuthServerUnavailable(f"token introspection failed: HTTP {status}")
        if answer.get("active") is not True:
            raise Unauthorized("the token is not active (unknown, expired or revoked)")
        token_type = answer.get("token_type")
        if token_type is not None and str(token_type).lower() not in ("bearer", "access_token"):
            raise Unauthorized("the token is not an access token")
        now = self._clock()
        info = access_info(answer, issuer=self.issuer, resource=self.resource, now=now, require_issuer=False)
        deadline = min(now + self._cache_ttl, info.expires_at)  # never beyond the token's own expiry
        if deadline > now:
            self._cache[key] = (info, deadline)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_max_entries:
                self._cache.popitem(last=False)
        return info

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "cache_hits": self._counters.counts["cache_hits"],
            "cache_entries": len(self._cache),
            "cache_max_entries": self._cache_max_entries,
        }


def create_verifier(
    settings: Settings,
    *,
    server: AuthorizationServer | None,
    store: OAuthStore | None,
    http: httpx.AsyncClient,
) -> TokenVerifier | None:
    """The verifier for `settings.auth_mode` (None for "none").

    `store` is used for revocation checks in jwt mode only when it can be shared with the authorization
    server, i.e. when it lives in Redis; an in-memory store never sees the other process's revocations.
    """
    mode = settings.auth_mode
    if mode == "none":
        return None
    if mode == "embedded":
        if server is None:
            raise ConfigError("auth mode embedded needs the embedded authorization server")
        return EmbeddedVerifier(server, resource=settings.resource)
    if mode == "jwt":
        shared = store if settings.redis_url else None
        return JwtVerifier(issuer=settings.issuer, resource=settings.resource, http=http, revocations=shared)
    if mode == "introspection":
        if not (settings.introspection_client_id and settings.introspection_client_secret):
            raise ConfigError(
                "auth mode introspection needs REFSERVER_INTROSPECTION_CLIENT_ID and "
                "REFSERVER_INTROSPECTION_CLIENT_SECRET"
            )
        return IntrospectionVerifier(
            issuer=settings.issuer,
            resource=settings.resource,
            http=http,
            introspection_url=None,
            client_id=settings.introspection_client_id,
            client_secret=settings.introspection_client_secret,
            cache_ttl=settings.introspection_cache_ttl,
        )
    raise ConfigError(f"unknown auth mode {mode!r}")
