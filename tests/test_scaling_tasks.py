"""Durable tasks across three instances sharing one redis-server, each request on the next instance (no stickiness).

Any instance accepts a task, any runs it, any answers the poll; an instance that dies mid-task loses nothing but
time: its lease runs out and another instance runs an idempotent task again (one result, never two runs at once)
or fails any other with the reason. Shutdown gives leases back at once; a Redis restart ends in a clean answer.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio

from refserver.oauth.headless import obtain_tokens
from tests.cluster import Cluster, start_cluster
from tests.conftest import ServerProcess, free_port, modern_request
from tests.redis_cluster import REDIS_KINDS, RedisBackend, start_redis
from tests.redis_server import RedisServer
from tests.tasks_client import CAPABILITIES_KEY, TasksClient, sse_messages

LEASE: Final = 2.0
"""The instances' task lease (REFSERVER_TASK_LEASE): short, so that a lost instance's work moves within seconds."""
FEATURES: Final = "reference,conformance"
WAIT: Final = 30.0


def _cluster(redis: RedisBackend, directory: Path, **settings: Any) -> Cluster:
    settings.setdefault("task_lease", LEASE)
    return start_cluster(redis, directory, features=FEATURES, **settings)


@pytest.fixture(scope="module", params=REDIS_KINDS)
def module_redis(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBackend]:
    """A single Redis, then a Redis Cluster: the tests using it hold for both."""
    server = start_redis(request.param, tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def cluster(module_redis: RedisBackend, tmp_path: Path) -> Iterator[Cluster]:
    started = _cluster(module_redis, tmp_path)
    yield started
    started.stop()


async def running_on(http: httpx.AsyncClient, instances: list[ServerProcess]) -> list[ServerProcess]:
    """The instances that run a task right now (their /health says so)."""
    found = []
    for instance in instances:
        try:
            health = (await http.get(f"{instance.url}/health", timeout=2.0)).json()
        except httpx.HTTPError:
            continue
        if health.get("runningTasks", 0) > 0:
            found.append(instance)
    return found


async def wait_running(http: httpx.AsyncClient, instances: list[ServerProcess], seconds: float) -> ServerProcess:
    with trio.fail_after(seconds):
        while not (found := await running_on(http, instances)):
            await trio.sleep(0.05)
    assert len(found) == 1, [i.url for i in found]
    return found[0]


def stored_task(redis: RedisBackend, task_id: str) -> dict[str, Any]:
    raw = redis.client().hget(f"refserver:{{tasks}}:task:{task_id}", "json")
    assert raw is not None
    record: dict[str, Any] = json.loads(raw)
    return record


def queue_entries(redis: RedisBackend) -> int:
    return int(redis.client().xlen("refserver:{tasks}:queue"))


def sigkill(instance: ServerProcess) -> None:
    assert instance.process is not None
    os.killpg(instance.process.pid, signal.SIGKILL)
    instance.process.wait(10)


async def test_a_task_started_through_a_is_polled_through_b_and_c(cluster: Cluster, http: httpx.AsyncClient) -> None:
    with trio.fail_after(WAIT):
        client = TasksClient(http, cluster.urls)
        task_id = await client.start("longRunningOperation", {"duration": 1.0, "steps": 4})
        seen_working = (await client.get(task_id))["status"]
        done = await client.wait_terminal(task_id, 10)
        assert seen_working == "working" and done["status"] == "completed"
        assert set(client.served_by) == set(cluster.urls)  # created, polled and answered across all three
        # Input inside a task, across instances: asked through one, answered through another, resumed by any.
        asking = await client.start("confirm_delete", {"filename": "shared.txt"})
        parked = await client.wait_for(asking, {"input_required"}, 10)
        key = next(iter(parked["inputRequests"]))
        answer = {"action": "accept", "content": {"confirm": True}}
        await client.result("tasks/update", {"taskId": asking, "inputResponses": {key: answer}})
        resumed = await client.wait_terminal(asking, 10)
        assert resumed["result"]["content"][0]["text"] == "Deleted shared.txt"
    assert queue_entries(cluster.redis) == 0


async def test_cancel_through_another_instance_stops_the_run_where_it_is(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(WAIT):
        client = TasksClient(http, cluster.urls)
        task_id = await client.start("longRunningOperation", {"duration": 60, "steps": 60})
        runner = await wait_running(http, cluster.instances, 5)
        elsewhere = next(i for i in cluster.instances if i is not runner)
        await client.result("tasks/cancel", {"taskId": task_id}, url=elsewhere.url)
        while await running_on(http, cluster.instances):
            await trio.sleep(0.05)  # the run ended on its instance, told over the bus
        assert (await client.get(task_id))["status"] == "cancelled"
    assert queue_entries(cluster.redis) == 0


async def test_sigkill_of_the_instance_running_an_idempotent_task(cluster: Cluster, http: httpx.AsyncClient) -> None:
    with trio.fail_after(WAIT):
        client = TasksClient(http, cluster.urls)
        task_id = await client.start("slow_compute", {"seconds": 2.5, "label": "survivor"})
        runner = await wait_running(http, cluster.instances, 5)
        sigkill(runner)
        killed_at = time.monotonic()
        survivors = [i for i in cluster.instances if i is not runner]
        client.urls = [i.url for i in survivors]
        await wait_running(http, survivors, LEASE + 2.0)
        picked_up = time.monotonic() - killed_at
        done = await client.wait_terminal(task_id, 10)
    assert done["status"] == "completed", done
    assert done["result"]["content"][0]["text"].startswith("Computed survivor")
    record = stored_task(cluster.redis, task_id)
    assert record["runs"] == 2 and record["runner"] is None  # run again once, from the start; one result
    assert queue_entries(cluster.redis) == 0
    assert picked_up <= LEASE + 2.0, picked_up
    print(f"\nSIGKILL mid-task: picked up by another instance {picked_up:.2f}s after the kill (lease {LEASE}s)")


async def test_sigkill_of_the_instance_running_a_non_idempotent_task(cluster: Cluster, http: httpx.AsyncClient) -> None:
    with trio.fail_after(WAIT):
        client = TasksClient(http, cluster.urls)
        task_id = await client.start("side_effect_job", {"seconds": 30})
        runner = await wait_running(http, cluster.instances, 5)
        sigkill(runner)
        client.urls = [i.url for i in cluster.instances if i is not runner]
        ended = await client.wait_terminal(task_id, LEASE + 5.0)
    assert ended["status"] == "failed", ended
    assert "was lost, and the tool is not safe to run again" in ended["error"]["message"]
    assert stored_task(cluster.redis, task_id)["runs"] == 1  # never started a second time
    assert queue_entries(cluster.redis) == 0


async def test_shutdown_gives_leases_back_at_once(
    module_redis: RedisBackend, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # A lease far longer than the test: only a lease given back lets another instance take the work this soon.
    cluster = _cluster(module_redis, tmp_path, task_lease=60)
    try:
        with trio.fail_after(WAIT):
            client = TasksClient(http, cluster.urls)
            idempotent = await client.start("slow_compute", {"seconds": 3, "label": "moved"})
            first = await wait_running(http, cluster.instances, 5)
            first.stop(signal.SIGTERM)
            stopped_at = time.monotonic()
            survivors = [i for i in cluster.instances if i is not first]
            client.urls = [i.url for i in survivors]
            await wait_running(http, survivors, 5)
            moved_after = time.monotonic() - stopped_at
            assert (await client.wait_terminal(idempotent, 10))["status"] == "completed"

            side_effect = await client.start("side_effect_job", {"seconds": 30})
            second = await wait_running(http, survivors, 5)
            second.stop(signal.SIGTERM)
            client.urls = [i.url for i in survivors if i is not second]
            ended = await client.wait_terminal(side_effect, 5)
        assert ended["status"] == "failed" and "shut down" in ended["error"]["message"], ended
        assert moved_after < 5, moved_after
        print(f"\nSIGTERM mid-task: the work moved {moved_after:.2f}s after the signal (lease 60s)")
    finally:
        cluster.stop()


async def test_redis_restart_mid_task_ends_cleanly(
    redis_server: RedisServer, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    cluster = _cluster(redis_server, tmp_path)
    try:
        with trio.fail_after(WAIT):
            client = TasksClient(http, cluster.urls)
            task_id = await client.start("slow_compute", {"seconds": 3, "label": "through a restart"})
            await wait_running(http, cluster.instances, 5)
            redis_server.restart()  # no persistence: the record and the queue are gone with it
            outcome: dict[str, Any] = {}
            with trio.fail_after(LEASE + 10):
                while True:
                    _, answer = await client.request("tasks/get", {"taskId": task_id})
                    if "error" in answer:
                        outcome = answer["error"]
                        if answer["error"]["code"] == -32602:
                            break  # gone with Redis's data: a clean "no such task"
                    elif answer["result"]["status"] in ("completed", "failed"):
                        outcome = answer["result"]
                        break
                    await trio.sleep(0.1)
            # The instances carry on: a task started now runs to its end.
            after = await client.start("slow_compute", {"seconds": 0.2, "label": "after"})
            assert (await client.wait_terminal(after, 10))["status"] == "completed"
            while await running_on(http, cluster.instances):
                await trio.sleep(0.05)  # the orphaned run stopped: its lease could not be renewed
        assert outcome, "no answer"
        print(f"\nRedis restart mid-task: the task ended as {outcome}")
    finally:
        cluster.stop()


async def test_a_listener_on_one_instance_follows_a_task_run_on_another(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(WAIT):
        client = TasksClient(http, cluster.urls)
        task_id = await client.start("slow_compute", {"seconds": 1.0, "label": "followed"})
        runner = await wait_running(http, cluster.instances, 5)
        listening_on = next(i for i in cluster.instances if i is not runner)
        body, headers = modern_request(
            "subscriptions/listen",
            {"notifications": {"taskIds": [task_id]}},
            5,
            **{CAPABILITIES_KEY: client.capabilities},
        )
        async with http.stream("POST", f"{listening_on.url}/mcp", json=body, headers=headers) as listening:
            messages = sse_messages(listening)
            assert (await anext(messages))["params"]["notifications"] == {"taskIds": [task_id]}
            async for message in messages:
                if message.get("method") == "notifications/tasks" and message["params"]["status"] == "completed":
                    assert message["params"]["result"]["content"][0]["text"].startswith("Computed followed")
                    break


async def test_another_users_task_is_not_found_on_any_instance(
    module_redis: RedisBackend, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    ports = [free_port() for _ in range(3)]
    # The public URL (issuer and resource) is the first instance's, so discovery needs no load balancer.
    public = f"http://127.0.0.1:{ports[0]}"
    cluster = _cluster(module_redis, tmp_path, ports=ports, base_url=public, auth_mode="embedded")
    try:
        with trio.fail_after(WAIT):
            alice = await obtain_tokens(http, f"{public}/mcp", user="alice")
            mallory = await obtain_tokens(http, f"{public}/mcp", user="mallory")
            owner = TasksClient(http, cluster.urls, alice["access_token"])
            stranger = TasksClient(http, cluster.urls, mallory["access_token"])
            task_id = await owner.start("confirm_delete", {"filename": "private.txt"})
            for method, params in (
                ("tasks/get", {"taskId": task_id}),
                ("tasks/update", {"taskId": task_id, "inputResponses": {}}),
                ("tasks/cancel", {"taskId": task_id}),
            ):
                for instance in cluster.instances:
                    foreign = await stranger.error(method, params, url=instance.url)
                    assert foreign["code"] == -32602 and task_id in foreign["message"], foreign
            parked = await owner.wait_for(task_id, {"input_required"}, 10)  # untouched by the stranger
            assert parked["status"] == "input_required"
            await owner.result("tasks/cancel", {"taskId": task_id})
    finally:
        cluster.stop()
