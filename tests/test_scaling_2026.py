"""The 2026-07-28 era across three instances sharing one redis-server, consecutive requests on different instances.

Nothing of a 2026 request stays on the instance that answered it: a multi round-trip call's state travels sealed in
the client's `requestState` under a key every instance shares (generated once and kept in Redis, or configured), a
listener on one instance hears what a call on another published, the periodic resource updates are announced by one
instance per round, and a plain call does not touch Redis at all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio

from bench.redisstats import calls_between, command_calls
from refserver.errors import INVALID_PARAMS
from tests.cluster import Cluster, RoundRobinTransport, redis_keys, start_cluster
from tests.conftest import free_port, modern_request
from tests.redis_cluster import REDIS_KINDS, RedisBackend, start_redis
from tests.redis_server import RedisServer
from tests.tasks_client import sse_messages

WAIT: Final = 20.0
CONFORMANCE: Final = "reference,conformance"
UPDATE_INTERVAL: Final = 0.3
MULTI_ROUND: Final = "test_input_required_result_multi_round"
SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
STATE_KEY_SUFFIX: Final = "request-state-key"


@pytest.fixture(scope="module", params=REDIS_KINDS)
def module_redis(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBackend]:
    """A single Redis, then a Redis Cluster: the tests using it hold for both."""
    server = start_redis(request.param, tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture(scope="module")
def cluster(module_redis: RedisBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = start_cluster(
        module_redis,
        tmp_path_factory.mktemp("cluster"),
        features=CONFORMANCE,
        subscription_update_interval=UPDATE_INTERVAL,
        log_message_interval=3600,
    )
    yield started
    started.stop()


# --- helpers ---------------------------------------------------------------------------------------------------


async def send(
    http: httpx.AsyncClient,
    url: str,
    method: str,
    params: dict[str, Any],
    request_id: int | str,
    *,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """A 2026 request to `url`; its HTTP status and its answer (the last message, if the answer is a stream)."""
    body, headers = modern_request(method, params, request_id)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.stream("POST", f"{url}/mcp", json=body, headers=headers) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            answers = [m async for m in sse_messages(response) if m.get("id") == request_id]
            assert len(answers) == 1, answers
            return response.status_code, answers[0]
        return response.status_code, json.loads(await response.aread())


def multi_round(**extra: Any) -> dict[str, Any]:
    return {"name": MULTI_ROUND, "arguments": {}, **extra}


def accepted(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


def input_required(answer: dict[str, Any], *keys: str) -> dict[str, Any]:
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    assert result["resultType"] == "input_required", result
    assert sorted(result["inputRequests"]) == sorted(keys), result
    return result


def tampered(state: str) -> str:
    """`state` with one bit of its ciphertext flipped (still well-formed base64, so only the seal can tell)."""
    prefix, _, body = state.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{prefix}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def assert_refused(status: int, answer: dict[str, Any]) -> None:
    assert status == 400, answer
    assert answer["error"]["code"] == INVALID_PARAMS, answer
    assert "requestState" in answer["error"]["message"], answer


def state_keys(redis: RedisBackend) -> list[str]:
    return [k for k in redis_keys(redis) if k.endswith(STATE_KEY_SUFFIX)]


async def first_round_on(http: httpx.AsyncClient, url: str, request_id: int, token: str | None = None) -> str:
    status, answer = await send(http, url, "tools/call", multi_round(), request_id, token=token)
    assert status == 200, answer
    state: str = input_required(answer, "step1")["requestState"]
    return state


async def second_round_on(
    http: httpx.AsyncClient, url: str, state: str, request_id: int, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    params = multi_round(inputResponses={"step1": accepted(name="Ada")}, requestState=state)
    return await send(http, url, "tools/call", params, request_id, token=token)


# --- multi round-trip requests ---------------------------------------------------------------------------------


async def test_every_round_of_a_multi_round_trip_call_on_the_next_instance(cluster: Cluster) -> None:
    transport = RoundRobinTransport(cluster.urls)
    # The transport picks the instance: each round goes to the next one, a, then b, then c.
    url = cluster.urls[0]
    with trio.fail_after(WAIT):
        async with httpx.AsyncClient(transport=transport, timeout=WAIT) as http:
            status, answer = await send(http, url, "tools/call", multi_round(), 1)
            assert status == 200
            first = input_required(answer, "step1")
            assert first["inputRequests"]["step1"]["method"] == "elicitation/create"

            retry = multi_round(inputResponses={"step1": accepted(name="Ada")}, requestState=first["requestState"])
            status, answer = await send(http, url, "tools/call", retry, 2)
            assert status == 200
            second = input_required(answer, "step2")
            # The state evolved (it now holds the name): b sealed anew what a had sealed.
            assert second["requestState"] != first["requestState"]

            last = multi_round(inputResponses={"step2": accepted(color="green")}, requestState=second["requestState"])
            status, answer = await send(http, url, "tools/call", last, 3)
    assert status == 200
    assert answer["result"]["resultType"] == "complete"
    assert answer["result"]["content"][0]["text"] == "Ada's favorite color is green"
    assert transport.rotation.sent == [int(u.rsplit(":", 1)[1]) for u in cluster.urls]


async def test_sampling_asked_by_one_instance_answered_on_the_next(cluster: Cluster) -> None:
    transport = RoundRobinTransport(cluster.urls)
    arguments = {"prompt": "hi", "maxTokens": 20}
    with trio.fail_after(WAIT):
        async with httpx.AsyncClient(transport=transport, timeout=WAIT) as http:
            status, answer = await send(
                http, cluster.urls[0], "tools/call", {"name": "sampleLLM", "arguments": arguments}, 1
            )
            assert status == 200
            asked = input_required(answer, "sample")
            assert asked["inputRequests"]["sample"]["method"] == "sampling/createMessage"
            assert asked["inputRequests"]["sample"]["params"]["maxTokens"] == 20
            retry: dict[str, Any] = {
                "name": "sampleLLM",
                "arguments": arguments,
                "inputResponses": {
                    "sample": {
                        "role": "assistant",
                        "content": {"type": "text", "text": "from the client"},
                        "model": "test-model",
                        "stopReason": "endTurn",
                    }
                },
            }
            # sampleLLM keeps nothing between rounds, so it may send no state; whatever it sent is echoed.
            if "requestState" in asked:
                retry["requestState"] = asked["requestState"]
            status, answer = await send(http, cluster.urls[0], "tools/call", retry, 2)
    assert status == 200, answer
    assert answer["result"]["content"][0]["text"] == "LLM sampling result: from the client"
    assert len(set(transport.rotation.sent)) == 2


async def test_a_tampered_request_state_is_refused_by_every_instance(cluster: Cluster) -> None:
    a, b, c = cluster.urls
    with trio.fail_after(WAIT):
        async with httpx.AsyncClient(timeout=WAIT) as http:
            state = await first_round_on(http, a, 1)
            for index, url in enumerate((a, b, c)):
                assert_refused(*await second_round_on(http, url, tampered(state), 10 + index))
            # The untouched state still opens: only the altered bit was refused.
            status, answer = await second_round_on(http, c, state, 20)
    assert status == 200
    input_required(answer, "step2")


async def test_a_state_sealed_for_one_user_is_refused_for_another(module_redis: RedisBackend, tmp_path: Path) -> None:
    from refserver.oauth.headless import obtain_tokens

    ports = [free_port() for _ in range(3)]
    # The public URL (issuer and resource) is instance a's, so discovery needs no load balancer.
    secured = start_cluster(
        module_redis,
        tmp_path,
        ports=ports,
        base_url=f"http://127.0.0.1:{ports[0]}",
        auth_mode="embedded",
        features=CONFORMANCE,
        rate_limit_per_minute=1000,
        subscription_update_interval=3600,
        log_message_interval=3600,
    )
    a, b, c = secured.urls
    try:
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=WAIT) as http:
                carol = (await obtain_tokens(http, f"{a}/mcp", user="carol"))["access_token"]
                dave = (await obtain_tokens(http, f"{a}/mcp", user="dave"))["access_token"]
                state = await first_round_on(http, a, 1, token=carol)
                assert_refused(*await second_round_on(http, b, state, 2, token=dave))
                status, answer = await second_round_on(http, c, state, 3, token=carol)
                assert status == 200, answer
                input_required(answer, "step2")
    finally:
        secured.stop()


# --- the request-state key -------------------------------------------------------------------------------------


async def test_the_generated_key_is_kept_in_redis_and_agreed_by_every_instance(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b, c = cluster.urls
    [key] = state_keys(cluster.redis)
    stored = cluster.redis.client().get(key)
    assert cluster.redis.client().pttl(key) > 0
    with trio.fail_after(60):
        async with httpx.AsyncClient(timeout=WAIT) as http:
            state = await first_round_on(http, a, 1)
            for index, url in enumerate((b, c)):
                status, answer = await second_round_on(http, url, state, 10 + index)
                assert status == 200, answer
                input_required(answer, "step2")
            # An instance started later reads the key the first ones agreed on, rather than making its own.
            late = start_cluster(
                cluster.redis,
                tmp_path,
                count=1,
                features=CONFORMANCE,
                subscription_update_interval=UPDATE_INTERVAL,
                log_message_interval=3600,
            )
            try:
                [d] = late.urls
                status, answer = await second_round_on(http, d, state, 20)
                assert status == 200, answer
                sealed_by_d = input_required(answer, "step2")["requestState"]
                last = multi_round(inputResponses={"step2": accepted(color="red")}, requestState=sealed_by_d)
                status, answer = await send(http, a, "tools/call", last, 21)
                assert status == 200, answer
                assert answer["result"]["content"][0]["text"] == "Ada's favorite color is red"
            finally:
                late.stop()
    assert state_keys(cluster.redis) == [key]
    assert cluster.redis.client().get(key) == stored


async def test_configured_keys_are_shared_and_nothing_is_kept_in_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {
        "features": CONFORMANCE,
        "subscription_update_interval": 3600,
        "log_message_interval": 3600,
    }
    configured = start_cluster(redis_server, tmp_path, request_state_keys="cluster-secret-one", **settings)
    a, b, c = configured.urls
    try:
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=WAIT) as http:
                state = await first_round_on(http, a, 1)
                status, answer = await second_round_on(http, b, state, 2)
                assert status == 200, answer
                second = input_required(answer, "step2")["requestState"]
                last = multi_round(inputResponses={"step2": accepted(color="blue")}, requestState=second)
                status, answer = await send(http, c, "tools/call", last, 3)
                assert status == 200, answer
                assert answer["result"]["content"][0]["text"] == "Ada's favorite color is blue"

                # Rotation: an instance sealing with a new key still opens what the old key sealed; the instances
                # that know only the old key refuse what the new one sealed.
                rotated = start_cluster(
                    redis_server,
                    tmp_path,
                    count=1,
                    request_state_keys="cluster-secret-two,cluster-secret-one",
                    **settings,
                )
                try:
                    [d] = rotated.urls
                    status, answer = await second_round_on(http, d, state, 4)
                    assert status == 200, answer
                    sealed_by_new_key = input_required(answer, "step2")["requestState"]
                    stale = multi_round(
                        inputResponses={"step2": accepted(color="blue")}, requestState=sealed_by_new_key
                    )
                    assert_refused(*await send(http, a, "tools/call", stale, 5))
                finally:
                    rotated.stop()
    finally:
        configured.stop()
    assert state_keys(redis_server) == []


# --- subscriptions/listen --------------------------------------------------------------------------------------


async def test_a_listener_on_one_instance_hears_a_change_made_on_another(cluster: Cluster) -> None:
    a, b, _ = cluster.urls
    body, headers = modern_request("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, "listen-1")
    with trio.fail_after(WAIT):
        async with (
            httpx.AsyncClient(timeout=WAIT) as http,
            http.stream("POST", f"{b}/mcp", json=body, headers=headers) as stream,
        ):
            assert stream.status_code == 200
            messages = sse_messages(stream)
            acknowledged = await anext(messages)
            assert acknowledged["method"] == "notifications/subscriptions/acknowledged"
            assert acknowledged["params"]["notifications"] == {"toolsListChanged": True}
            assert acknowledged["params"]["_meta"][SUBSCRIPTION_ID] == "listen-1"
            # Acknowledged means registered: a change published from now on reaches this listener.
            status, answer = await send(http, a, "tools/call", {"name": "test_trigger_tool_change", "arguments": {}}, 2)
            assert status == 200, answer
            assert answer["result"]["content"][0]["text"] == "Tool list change published."
            changed = await anext(messages)
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"][SUBSCRIPTION_ID] == "listen-1"


async def test_periodic_resource_updates_are_announced_by_one_instance_per_round(cluster: Cluster) -> None:
    uri = "test://static/resource/1"
    body, headers = modern_request("subscriptions/listen", {"notifications": {"resourceSubscriptions": [uri]}}, 7)
    window = 3.0
    updates: list[dict[str, Any]] = []
    with trio.fail_after(WAIT):
        async with (
            httpx.AsyncClient(timeout=WAIT) as http,
            http.stream("POST", f"{cluster.urls[1]}/mcp", json=body, headers=headers) as stream,
        ):
            assert stream.status_code == 200
            messages = sse_messages(stream)
            acknowledged = await anext(messages)
            assert acknowledged["params"]["notifications"] == {"resourceSubscriptions": [uri]}
            # A measurement window, not a wait for a condition: the count over it is what is checked.
            with trio.move_on_after(window):
                async for message in messages:
                    updates.append(message)
    assert all(m["method"] == "notifications/resources/updated" for m in updates), updates
    assert all(m["params"]["uri"] == uri and m["params"]["_meta"][SUBSCRIPTION_ID] == 7 for m in updates)
    rounds = window / UPDATE_INTERVAL
    # The lease (held for 0.9 of an interval) allows at most one announcement per 0.27 s: 12 in the window, and one
    # more for a notice published just before it began. An announcer per instance would send about 30.
    most = int(window / (0.9 * UPDATE_INTERVAL)) + 2
    assert rounds / 2 <= len(updates) <= most, f"{len(updates)} updates in {rounds:.0f} rounds"


# --- the hot path ----------------------------------------------------------------------------------------------


async def test_a_2026_tools_call_issues_no_redis_command(redis_server: RedisServer, tmp_path: Path) -> None:
    quiet = start_cluster(redis_server, tmp_path, subscription_update_interval=3600, log_message_interval=3600)
    calls = 200
    window = 3.0
    transport = RoundRobinTransport(quiet.urls)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=WAIT) as http:

            async def echo(request_id: int) -> None:
                params = {"name": "echo", "arguments": {"message": f"m{request_id}"}}
                status, answer = await send(http, quiet.urls[0], "tools/call", params, request_id)
                assert status == 200 and answer["result"]["content"][0]["text"] == f"Echo: m{request_id}", answer

            with trio.fail_after(WAIT):
                for request_id in range(6):  # every instance has served one before counting starts
                    await echo(request_id)
            # Two windows of the same length: one with the calls spread over it, then an idle one. The instances'
            # own periodic work (liveness, the bus) is in both; a command per call would add `calls` to the first.
            before = command_calls([redis_server.port])
            started = trio.current_time()
            with trio.fail_after(WAIT):
                for index in range(calls):
                    await echo(100 + index)
                    await trio.sleep_until(
                        started + window * (index + 1) / calls
                    )  # pacing: the calls spread over the window
            busy = calls_between(before, command_calls([redis_server.port]))
            length = trio.current_time() - started

            before = command_calls([redis_server.port])
            await trio.sleep(length)  # the idle window: a measurement, not a wait for a condition
            idle = calls_between(before, command_calls([redis_server.port]))
    finally:
        quiet.stop()
    assert len(set(transport.rotation.sent)) == 3
    extra = sum(busy.values()) - sum(idle.values())
    per_call = extra / calls
    print(f"redis commands: idle {idle}, with {calls} calls {busy}: {per_call:+.3f} per call")
    # Background work differs by a few commands between two windows (a periodic task's phase); one command per
    # call would be +1.0.
    assert per_call < 0.1, (idle, busy)
