"""Redis's exceptions mapped to ours: the one place that decides what an outage is and what a bug is."""

from __future__ import annotations

from typing import Final

from redis import exceptions as rx

from refserver.errors import BackendUnavailable, InternalError

# Replies that mean "Redis cannot serve this now" rather than "this command is wrong"; redis-py leaves them as plain
# ResponseError, with the code as the first word. (LOADING, READONLY, OOM, TRYAGAIN, CLUSTERDOWN and MASTERDOWN get
# their own classes, matched below.)
_UNAVAILABLE_REPLIES: Final = frozenset({"MISCONF", "BUSY", "NOREPLICAS"})
_UNAVAILABLE_ERRORS: Final = (
    rx.ConnectionError,  # includes BusyLoadingError, AuthenticationError and "No connection available."
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.TryAgainError,
    rx.ClusterDownError,
)


def map_redis_error(exc: rx.RedisError) -> Exception:
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return BackendUnavailable(f"Redis unavailable: {exc}")
    if isinstance(exc, rx.ResponseError) and str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
        return BackendUnavailable(f"Redis unavailable: {exc}")
    # Anything else (WRONGTYPE, a syntax error, a bad script) is a bug on our side, not an outage.
    return InternalError(f"Redis error: {exc}")
