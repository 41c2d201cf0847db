"""What the servers ask of Redis: connections (CLIENT LIST) and commands executed (INFO commandstats).

Each takes the ports of the Redis processes to read: one for a single Redis; a cluster's masters for commands (a
replica executes its master's writes again, which would count them twice) and any of its nodes for connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import redis

NOT_OURS: Final = ("info", "client|list", "replconf")


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def redis_connections(ports: Sequence[int]) -> dict[str, int]:
    """Connections named `refserver*` (CLIENT SETNAME by refserver) and all connections, summed over `ports`."""
    totals = {"refserver": 0, "total": 0}
    for counts in redis_connections_by_node(ports).values():
        totals["refserver"] += counts["refserver"]
        totals["total"] += counts["total"]
    return totals


def redis_connections_by_node(ports: Sequence[int]) -> dict[str, dict[str, int]]:
    """`redis_connections` of each port apart, keyed by the port."""
    by_node: dict[str, dict[str, int]] = {}
    for port in ports:
        client = _client(port)
        try:
            clients = client.client_list()
        finally:
            client.close()
        ours = [c for c in clients if str(c.get("name", "")).startswith("refserver")]
        by_node[str(port)] = {"refserver": len(ours), "total": len(clients)}
    return by_node


def command_calls(ports: Sequence[int]) -> dict[str, int]:
    """Calls so far per command (`evalsha`, `xread`, ...), from INFO commandstats, summed over `ports`."""
    calls: dict[str, int] = {}
    for port in ports:
        client = _client(port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        for name, values in stats.items():
            command = name.removeprefix("cmdstat_")
            calls[command] = calls.get(command, 0) + int(values["calls"])
    return calls


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands executed between two readings, busiest first (INFO itself, and a cluster replica's acknowledgements
    to its master, left out: neither is refserver's)."""
    delta = {name: after[name] - before.get(name, 0) for name in after if name not in NOT_OURS}
    return dict(sorted(((k, v) for k, v in delta.items() if v > 0), key=lambda kv: -kv[1]))
