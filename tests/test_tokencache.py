"""TokenCache, the one bounded cache of verified tokens (embedded and introspection verifiers), without I/O."""

from __future__ import annotations

import pytest

from refserver.oauth.models import AccessInfo
from refserver.oauth.tokencache import TokenCache

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def info(n: int, *, expires_in: float = 3600, grant: str | None = None) -> AccessInfo:
    return AccessInfo(
        subject=f"user{n}",
        client_id="c",
        scopes=frozenset({"mcp"}),
        expires_at=int(NOW + expires_in),
        token_id=f"jti{n}",
        grant_id=grant,
    )


def test_an_entry_lives_until_its_token_expires_when_there_is_no_max_age() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    cache.put("t", info(1, expires_in=10))
    clock.now = NOW + 9.9
    assert cache.get("t") == info(1, expires_in=10)
    clock.now = NOW + 10  # exactly exp: gone
    assert cache.get("t") is None
    assert len(cache) == 0
    assert cache.statistics() == {"entries": 0, "max_entries": 10_000, "hits": 1, "misses": 1, "evictions": 0}


def test_max_age_bounds_an_entry_but_never_beyond_the_token_expiry() -> None:
    clock = Clock()
    cache = TokenCache(max_age=5, clock=clock)
    cache.put("long", info(1, expires_in=3600))
    cache.put("short", info(2, expires_in=2))
    clock.now = NOW + 2
    assert cache.get("short") is None
    assert cache.get("long") is not None
    clock.now = NOW + 5
    assert cache.get("long") is None


def test_an_already_expired_token_is_not_remembered() -> None:
    cache = TokenCache(clock=Clock())
    cache.put("dead", info(1, expires_in=0))
    assert len(cache) == 0


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = TokenCache(max_entries=2, clock=Clock())
    cache.put("a", info(1))
    cache.put("b", info(2))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", info(3))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.statistics()["evictions"] == 1


def test_revocation_by_token_id_or_grant_and_clear() -> None:
    cache = TokenCache(clock=Clock())
    cache.put("a", info(1, grant="g1"))
    cache.put("b", info(2, grant="g1"))
    cache.put("c", info(3, grant="g2"))
    cache.put("d", info(4, grant="g2"))
    cache.revoke(jti="jti3")
    assert cache.get("c") is None and cache.get("d") is not None
    cache.revoke(grant_id="g1")
    assert cache.get("a") is None and cache.get("b") is None
    cache.clear()
    assert len(cache) == 0
    assert cache.statistics()["evictions"] == 4


def test_the_token_itself_is_never_kept() -> None:
    token = "eyJ-a-distinctive-bearer-token-" + "x" * 40
    cache = TokenCache(clock=Clock())
    cache.put(token, info(1))
    keys = list(cache._entries)  # what the cache holds is the point of this test
    assert token not in keys and all(len(key) == 64 for key in keys)
    assert cache.get(token) is not None


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        TokenCache(max_entries=0)
