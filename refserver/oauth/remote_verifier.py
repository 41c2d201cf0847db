"""What the jwt and introspection verifiers share: bounded HTTP calls to the external authorization server,
its metadata (RFC 8414), and the availability probe that turns `state` "degraded" and back to "ok"."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import trio

from refserver.errors import AuthServerUnavailable
from refserver.oauth.models import AccessInfo
from refserver.oauth.tokencache import TokenCache
from refserver.oauth.verifier import State, VerificationCounters, check_token_shape

logger = logging.getLogger(__name__)

HTTP_TIMEOUT: Final = 3.0
"""Whole-call limit (connect, send, read) of every request to the authorization server."""
MAX_RESPONSE_BYTES: Final = 256 * 1024
"""Metadata, JWKS and introspection answers are a few KiB; a larger body is a misbehaving server."""
PROBE_INTERVAL: Final = 5.0
"""Seconds between availability probes while the authorization server answers."""
PROBE_RETRY_INTERVAL: Final = 1.0
"""Seconds between probes while it does not: a recovery is noticed within about a second."""


class Unreachable(AuthServerUnavailable):
    """A network-level failure (connect, timeout, broken connection): the server is degraded until a probe."""


class RemoteVerifier:
    """What the jwt and introspection modes share: bounded HTTP calls, metadata and the availability probe."""

    mode: str = ""
    counted: tuple[str, ...] = ()
    """What the mode counts besides the outcomes and the probes."""

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
        self._counters = VerificationCounters("probes", *self.counted)

    @property
    def state(self) -> State:
        return self._state

    @property
    def cache(self) -> TokenCache | None:
        return None

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
        except Unreachable as exc:
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
        """One bounded request: (status, parsed JSON body or None). Network failures raise `Unreachable`."""
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
            raise Unreachable(f"{method} {url} failed: {exc!r}") from exc
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
