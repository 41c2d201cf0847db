"""Tasks over real HTTP on one instance: the 2026 extension and the 2025-11-25 experimental tasks over the same
store, progress, exact cancellation, ownership, and every bound at its limit (a clear error, nothing lost)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from refserver.oauth.headless import obtain_tokens
from refserver.protocol.tasks import RELATED_TASK
from tests.conftest import ServerProcess, initialize, modern_request, session_headers
from tests.tasks_client import TasksClient, sse_messages
from tests.test_observability import scrape, value

TEST_TIMEOUT = 30.0
LONG = {"duration": 60, "steps": 60}


async def test_long_running_operation_runs_as_a_task_only_when_the_client_takes_tasks(
    shared_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [shared_server.url])
        task_id = await client.start("longRunningOperation", {"duration": 1.2, "steps": 3})
        first = await client.get(task_id)
        assert first["status"] == "working" and first["resultType"] == "complete"
        progressed = await client.wait_for(task_id, {"completed"}, 10)
        assert progressed["result"]["content"][0]["text"].startswith("Long running operation completed")
        assert RELATED_TASK not in progressed["result"].get("_meta", {})
        # Without the extension on the request, the same call is answered as it always was.
        plain = TasksClient(http, [shared_server.url], tasks=False)
        result = await plain.result("tools/call", {"name": "longRunningOperation", "arguments": {"duration": 0}})
        assert result["resultType"] == "complete" and result["content"]


async def test_progress_of_a_running_task_is_its_status_message(
    shared_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [shared_server.url])
        task_id = await client.start("longRunningOperation", {"duration": 3, "steps": 6})
        while "statusMessage" not in (task := await client.get(task_id)):
            await trio.sleep(0.05)
        assert task["status"] == "working"
        assert " of 6: Step " in task["statusMessage"], task
        await client.result("tasks/cancel", {"taskId": task_id})


async def test_cancel_stops_exactly_that_task(shared_server: ServerProcess, http: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [shared_server.url])
        doomed = await client.start("longRunningOperation", LONG)
        survivor = await client.start("slow_compute", {"seconds": 1.5, "label": "survivor"})
        ack = await client.result("tasks/cancel", {"taskId": doomed})
        assert set(ack) <= {"resultType", "_meta"} and ack["resultType"] == "complete"
        cancelled = await client.get(doomed)
        assert cancelled["status"] == "cancelled"
        finished = await client.wait_terminal(survivor, 10)
        assert finished["status"] == "completed"
        assert (await client.get(doomed))["status"] == "cancelled"  # the stopped run wrote nothing afterwards
        again = await client.result("tasks/cancel", {"taskId": finished["taskId"]})
        assert again["resultType"] == "complete"  # cancelling a finished task is acknowledged, and changes nothing
        assert (await client.get(survivor))["status"] == "completed"


async def test_a_task_is_visible_to_its_owner_only(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(auth_mode="embedded")
    with trio.fail_after(TEST_TIMEOUT):
        alice = await obtain_tokens(http, server.mcp_url, user="alice")
        mallory = await obtain_tokens(http, server.mcp_url, user="mallory")
        owner = TasksClient(http, [server.url], alice["access_token"])
        stranger = TasksClient(http, [server.url], mallory["access_token"])
        task_id = await owner.start("confirm_delete", {"filename": "secret.txt"})
        unknown = await stranger.error("tasks/get", {"taskId": "no-such-task"})
        for method, params in (
            ("tasks/get", {"taskId": task_id}),
            ("tasks/update", {"taskId": task_id, "inputResponses": {}}),
            ("tasks/cancel", {"taskId": task_id}),
        ):
            foreign = await stranger.error(method, params)
            # The same answer as for a task that does not exist: ids cannot be probed.
            assert foreign["code"] == unknown["code"] == -32602, foreign
        parked = await owner.wait_for(task_id, {"input_required"}, 10)
        key = next(iter(parked["inputRequests"]))
        await owner.result("tasks/update", {"taskId": task_id, "inputResponses": {key: _confirm()}})
        done = await owner.wait_terminal(task_id, 10)
        assert done["result"]["content"][0]["text"] == "Deleted secret.txt"


def _confirm() -> dict[str, Any]:
    return {"action": "accept", "content": {"confirm": True}}


async def test_unfinished_tasks_per_user_are_bounded(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(tasks_per_subject=2)
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [server.url])
        first = await client.start("longRunningOperation", LONG)
        await client.start("longRunningOperation", LONG)
        refused = await client.error("tools/call", {"name": "longRunningOperation", "arguments": LONG})
        assert refused["code"] == -32000 and "at most 2 unfinished tasks" in refused["message"]
        await client.result("tasks/cancel", {"taskId": first})
        third = await client.start("slow_compute", {"seconds": 0, "label": "after"})
        assert (await client.wait_terminal(third, 10))["status"] == "completed"


async def test_the_queue_is_bounded(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(task_queue_limit=2, task_workers=1)
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [server.url])
        running = await client.start("longRunningOperation", LONG)
        waiting = await client.start("slow_compute", {"seconds": 0, "label": "queued"})
        refused = await client.error("tools/call", {"name": "slow_compute", "arguments": {"seconds": 0}})
        assert "task queue is full (2 tasks)" in refused["message"], refused
        assert (await client.get(waiting))["status"] == "working"  # queued behind the one worker, not lost
        await client.result("tasks/cancel", {"taskId": running})
        assert (await client.wait_terminal(waiting, 10))["status"] == "completed"


async def test_a_result_too_large_fails_its_task_clearly(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(task_max_result_bytes=300)
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [server.url])
        task_id = await client.start("slow_compute", {"seconds": 0, "label": "x" * 400})
        ended = await client.wait_terminal(task_id, 10)
        assert ended["status"] == "failed" and "result" not in ended
        assert "larger than this server keeps (300 bytes)" in ended["error"]["message"], ended


async def test_a_task_ends_with_its_time_to_live(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(task_ttl=1.5)
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [server.url])
        task_id = await client.start("longRunningOperation", LONG)
        assert (await client.get(task_id))["ttlMs"] == 1500
        await trio.sleep(2.0)  # a real TTL, waited out
        gone = await client.error("tasks/get", {"taskId": task_id})
        assert gone["code"] == -32602
        metrics = (await http.get(f"{server.url}/health")).json()
        assert metrics["status"] == "ok"


# --- 2025-11-25: experimental tasks in a session ---------------------------------------------------------------


async def rpc(http: httpx.AsyncClient, url: str, session: str, method: str, params: dict[str, Any]) -> dict:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = await http.post(url, json=body, headers=session_headers(session))
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        decoded = [m async for m in sse_messages(response) if m.get("id") == 1]
        return decoded[-1]
    answer: dict[str, Any] = response.json()
    return answer


async def test_2025_experimental_tasks(shared_server: ServerProcess, http: httpx.AsyncClient) -> None:
    url = shared_server.mcp_url
    with trio.fail_after(TEST_TIMEOUT):
        session = await initialize(http, url)
        tools = {t["name"]: t for t in (await rpc(http, url, session, "tools/list", {}))["result"]["tools"]}
        assert tools["longRunningOperation"]["execution"] == {"taskSupport": "optional"}
        assert tools["failing_job"]["execution"] == {"taskSupport": "required"}
        assert "execution" not in tools["echo"]
        required = await rpc(http, url, session, "tools/call", {"name": "failing_job", "arguments": {}})
        assert required["error"]["code"] == -32601
        forbidden = {"name": "greet", "arguments": {"name": "x"}, "task": {}}
        assert (await rpc(http, url, session, "tools/call", forbidden))["error"]["code"] == -32601

        call = {"name": "longRunningOperation", "arguments": {"duration": 0.5, "steps": 2}, "task": {"ttl": 60_000}}
        created = (await rpc(http, url, session, "tools/call", call))["result"]
        task = created["task"]
        assert task["status"] == "working" and task["ttl"] == 60_000 and task["pollInterval"] > 0
        task_id = task["taskId"]
        got = (await rpc(http, url, session, "tasks/get", {"taskId": task_id}))["result"]
        assert got["taskId"] == task_id
        result = (await rpc(http, url, session, "tasks/result", {"taskId": task_id}))["result"]
        assert result["content"][0]["text"].startswith("Long running operation completed")
        assert result["_meta"][RELATED_TASK] == {"taskId": task_id}
        listed = (await rpc(http, url, session, "tasks/list", {}))["result"]["tasks"]
        assert task_id in [t["taskId"] for t in listed]
        finished = await rpc(http, url, session, "tasks/cancel", {"taskId": task_id})
        assert finished["error"]["code"] == -32602  # a terminal task cannot be cancelled (2025-11-25)

        long = {"name": "longRunningOperation", "arguments": LONG, "task": {}}
        other = (await rpc(http, url, session, "tools/call", long))["result"]["task"]["taskId"]
        stopped = (await rpc(http, url, session, "tasks/cancel", {"taskId": other}))["result"]
        assert stopped["status"] == "cancelled"


async def test_2025_task_input_arrives_on_the_tasks_result_stream(
    shared_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    url = shared_server.mcp_url
    with trio.fail_after(TEST_TIMEOUT):
        session = await initialize(http, url)
        call = {"name": "confirm_delete", "arguments": {"filename": "a.txt"}, "task": {}}
        task_id = (await rpc(http, url, session, "tools/call", call))["result"]["task"]["taskId"]
        body = {"jsonrpc": "2.0", "id": 7, "method": "tasks/result", "params": {"taskId": task_id}}
        async with http.stream("POST", url, json=body, headers=session_headers(session)) as response:
            messages = sse_messages(response)
            asked = await anext(messages)
            assert asked["method"] == "elicitation/create", asked
            assert asked["params"]["_meta"][RELATED_TASK] == {"taskId": task_id}
            reply = {"jsonrpc": "2.0", "id": asked["id"], "result": _confirm()}
            answered = await http.post(url, content=json.dumps(reply), headers=session_headers(session))
            assert answered.status_code == 202
            statuses = []
            async for message in messages:
                if message.get("method") == "notifications/tasks/status":
                    assert message["params"]["taskId"] == task_id
                    statuses.append(message["params"]["status"])
                if message.get("id") == 7:
                    assert message["result"]["content"][0]["text"] == "Deleted a.txt", message
                    break
            assert statuses and statuses[-1] == "completed", statuses
        got = (await rpc(http, url, session, "tasks/get", {"taskId": task_id}))["result"]
        assert got["status"] == "completed"


async def test_listeners_follow_their_own_tasks_status(shared_server: ServerProcess, http: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [shared_server.url])
        task_id = await client.start("confirm_delete", {"filename": "followed.txt"})
        plain = TasksClient(http, [shared_server.url], tasks=False)
        refused = await plain.error("subscriptions/listen", {"notifications": {"taskIds": [task_id]}})
        assert refused["code"] == -32021
        assert refused["data"]["requiredCapabilities"]["extensions"] == {"io.modelcontextprotocol/tasks": {}}

        body, headers = modern_request(
            "subscriptions/listen",
            {"notifications": {"taskIds": [task_id, "somebody-elses-or-no-task"]}},
            99,
            **{"io.modelcontextprotocol/clientCapabilities": client.capabilities},
        )
        async with http.stream("POST", shared_server.mcp_url, json=body, headers=headers) as listening:
            messages = sse_messages(listening)
            acknowledged = await anext(messages)
            assert acknowledged["method"] == "notifications/subscriptions/acknowledged"
            assert acknowledged["params"]["notifications"] == {"taskIds": [task_id]}  # only what is the caller's
            parked = await client.wait_for(task_id, {"input_required"}, 10)
            key = next(iter(parked["inputRequests"]))
            await client.result("tasks/update", {"taskId": task_id, "inputResponses": {key: _confirm()}})
            seen = []
            async for message in messages:
                if message.get("method") != "notifications/tasks":
                    continue
                params = message["params"]
                assert params["taskId"] == task_id and "resultType" not in params
                assert params["_meta"]["io.modelcontextprotocol/subscriptionId"] == 99
                seen.append(params["status"])
                if params["status"] == "completed":
                    assert params["result"]["content"][0]["text"] == "Deleted followed.txt"
                    break
        assert "working" in seen and seen[-1] == "completed", seen


async def test_tasks_are_counted_in_the_metrics(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(metrics="on", tasks_per_subject=1)
    with trio.fail_after(TEST_TIMEOUT):
        client = TasksClient(http, [server.url])
        task_id = await client.start("longRunningOperation", LONG)
        await client.error("tools/call", {"name": "longRunningOperation", "arguments": LONG})  # over the bound
        while value(during := await scrape(http, f"{server.url}/metrics"), "refserver_tasks_running") == 0:
            await trio.sleep(0.05)  # claimed by this instance's runner within milliseconds
        await client.result("tasks/cancel", {"taskId": task_id})
    assert value(during, "refserver_tasks_created_total") == 1
    assert value(during, "refserver_tasks_refused_total") == 1
    assert value(during, "refserver_tasks_running") == 1
    assert value(during, "refserver_task_workers") == 32
