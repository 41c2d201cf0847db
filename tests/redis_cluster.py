"""A real Redis Cluster started by the tests: six `redis-server --cluster-enabled yes` on free ports, three
masters and three replicas (`redis-cli --cluster create --cluster-replicas 1`), which tests may SIGKILL node by node.
The node options and the forming of the cluster are `bench.redis_cluster`'s, shared with the benchmark (S2C, S4C).

`RedisClusterServers` offers what tests use of a `RedisServer` (`url`, `client()`, `node_clients()`), so the
backend-agnostic tests take either (`tests.cluster.start_cluster` sets REFSERVER_REDIS_CLUSTER from it).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import redis
from redis.cluster import RedisCluster

from bench import redis_cluster as formation
from tests.redis_server import RedisServer, free_port


@attrs.define
class RedisClusterServers:
    directory: Path
    node_timeout_ms: int = formation.NODE_TIMEOUT_MS
    """cluster-node-timeout: how long a master may be silent before its replica is promoted."""
    nodes: list[RedisServer] = attrs.field(factory=list)
    cluster_mode = True

    @property
    def url(self) -> str:
        """Any node's URL is enough for the cluster client: it discovers the rest."""
        live = next(node for node in self.nodes if node.process is not None and node.process.poll() is None)
        return f"redis://127.0.0.1:{live.port}/0"

    def start(self, count: int = formation.NODES) -> None:
        for _ in range(count):
            node = RedisServer(self.directory)
            node.extra_options = formation.node_options(
                self.directory / f"nodes-{node.port}.conf", free_port(), self.node_timeout_ms
            )
            node.start()
            self.nodes.append(node)
        formation.create([node.port for node in self.nodes])

    def wait_healthy(self, timeout: float = formation.FORM_TIMEOUT) -> None:
        """Until every live node says `cluster_state:ok`, all slots are served and every master has a synced replica
        (polled: a synchronous harness step, like `RedisServer.start`)."""
        formation.wait_healthy([node.port for node in self.live_nodes()], timeout)

    def serves_without(self, dead: RedisServer) -> bool:
        """Every live node agrees the cluster is up and names no slot of `dead` any more (its replica took them)."""
        try:
            for node in self.live_nodes():
                client = node.client()
                if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                    return False
                for entry in client.execute_command("CLUSTER SLOTS"):  # type: ignore[no-untyped-call]
                    if int(entry[2][1]) == dead.port:
                        return False
        except redis.RedisError:
            return False
        return True

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def masters(self) -> list[RedisServer]:
        return [node for node in self.live_nodes() if node.client().info("replication").get("role") == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now."""
        owner = self.client().get_node_from_key(key)  # type: ignore[no-untyped-call]
        return next(node for node in self.nodes if node.port == int(owner.port))

    def client(self) -> RedisCluster:
        """A synchronous cluster client for inspecting what the code under test wrote."""
        live = self.live_nodes()[0]
        return RedisCluster(host="127.0.0.1", port=live.port, socket_timeout=5)

    def node_clients(self) -> list[redis.Redis]:
        return [node.client() for node in self.live_nodes()]

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


RedisBackend = RedisServer | RedisClusterServers
"""What the backend-agnostic tests run against: `start_redis("single" | "cluster", directory)`."""
REDIS_KINDS = ("single", "cluster")


def start_redis(kind: str, directory: Path) -> RedisBackend:
    backend: RedisBackend = RedisClusterServers(directory) if kind == "cluster" else RedisServer(directory)
    backend.start()
    return backend
