"""What the servers ask of Redis: connections (CLIENT LIST) and commands executed (INFO commandstats)."""

from __future__ import annotations

import redis


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def redis_connections(port: int) -> dict[str, int]:
    """Connections named `refserver*` (CLIENT SETNAME by refserver) and all connections."""
    client = _client(port)
    try:
        clients = client.client_list()
    finally:
        client.close()
    ours = [c for c in clients if str(c.get("name", "")).startswith("refserver")]
    return {"refserver": len(ours), "total": len(clients)}


def command_calls(port: int) -> dict[str, int]:
    """Calls so far per command (`evalsha`, `xread`, ...), from INFO commandstats."""
    client = _client(port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands executed between two readings, busiest first (INFO itself left out)."""
    delta = {name: after[name] - before.get(name, 0) for name in after if name not in ("info", "client|list")}
    return dict(sorted(((k, v) for k, v in delta.items() if v > 0), key=lambda kv: -kv[1]))
