"""Tokens of the `AuthorizationServer` running in this process, remembered in a `TokenCache`."""

from __future__ import annotations

from typing import Any

import trio

from refserver.errors import Unauthorized
from refserver.oauth.models import AccessInfo
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.tokencache import TokenCache
from refserver.oauth.verifier import State, VerificationCounters, check_token_shape


class EmbeddedVerifier:
    """Tokens of the `AuthorizationServer` running in this process."""

    def __init__(self, server: AuthorizationServer, *, resource: str, cache: TokenCache | None = None) -> None:
        self._server = server
        self._resource = resource
        self._counters = VerificationCounters()
        self.cache = cache or TokenCache(clock=server.clock)

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
        info = await self._server.access_tokens.decode(token)
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
