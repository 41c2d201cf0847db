"""Forming a Redis Cluster of three masters and three replicas out of six `redis-server --cluster-enabled yes`.

Shared by the benchmark (S2C, S4C) and the tests (`tests/redis_cluster.py`, which start, kill and inspect the nodes):
each starts its six processes its own way, and both use what is here to give them the cluster options, join them
(`redis-cli --cluster create --cluster-replicas 1`) and wait until the cluster serves every slot with every master's
replica in sync. Synchronous on purpose: a harness step, before any server under test is started.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import redis

REDIS_CLI: Final = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MASTERS: Final = 3
NODES: Final = 2 * MASTERS
"""Three masters, each with one replica (`--cluster-replicas 1`)."""
NODE_TIMEOUT_MS: Final = 1000
"""cluster-node-timeout: a master silent this long is failed over to its replica (Redis's default, 15 s, would make
a failover test slow; one second is still far above a healthy node's gossip interval here)."""
FORM_TIMEOUT: Final = 30.0
"""Seconds the six nodes get to agree on one slot map with every replica in sync."""
POLL_INTERVAL: Final = 0.05


def node_options(config_file: Path, cluster_port: int, node_timeout_ms: int = NODE_TIMEOUT_MS) -> list[str]:
    """The redis-server options that make a node of a cluster (added to its port, bind and persistence options).

    The gossip port is given apart: by default it is the port + 10000, which a free port may not allow.
    """
    return [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        str(node_timeout_ms),
        "--cluster-port",
        str(cluster_port),
        "--cluster-config-file",
        str(config_file),
    ]


def create(ports: Sequence[int]) -> None:
    """Join the running nodes on `ports` into one cluster (masters and replicas as redis-cli assigns them), then
    wait until it is healthy."""
    addresses = [f"127.0.0.1:{port}" for port in ports]
    subprocess.run(
        [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=FORM_TIMEOUT,
    )
    wait_healthy(ports)


def wait_healthy(ports: Sequence[int], timeout: float = FORM_TIMEOUT) -> None:
    """Until `healthy(ports)` (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(ports):
            return
        time.sleep(POLL_INTERVAL)
    raise RuntimeError(f"the Redis Cluster did not form in {timeout}s")


def healthy(ports: Sequence[int]) -> bool:
    """Every node on `ports` says `cluster_state:ok`, and there are MASTERS masters, each with a synced replica."""
    try:
        masters = 0
        for port in ports:
            client = node_client(port)
            if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                return False
            info = client.info("replication")
            if info.get("role") == "master":
                masters += 1
                if not _replica_synced(info):
                    return False
        return masters == MASTERS
    except redis.RedisError:
        return False


def masters(ports: Sequence[int]) -> list[int]:
    """The ports of the nodes that are masters now."""
    return [port for port in ports if node_client(port).info("replication").get("role") == "master"]


def _replica_synced(replication: dict[str, object]) -> bool:
    return any(
        key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        for key, value in replication.items()
    )


def node_client(port: int) -> redis.Redis:
    """A plain synchronous client for one node (no redirections followed)."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
