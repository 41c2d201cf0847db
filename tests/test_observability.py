"""Structured logs and Prometheus metrics.

Logs: every line a server writes during a whole OAuth flow (registration of a public and a confidential client,
authorization, token exchange, MCP calls, refresh, revocation, refused tokens, shutdown) is one JSON object, and
no token, code, verifier, client secret or Authorization header appears in it. With default settings an echo call
writes nothing. Metrics: scrapes before and after a known set of calls differ by exactly those calls.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from refserver.config import Settings
from refserver.errors import ConfigError
from refserver.oauth.crypto import s256_challenge
from refserver.oauth.headless import LOOPBACK_REDIRECT, Discovery, act_as_person, discover, obtain_tokens
from refserver.observability import context
from refserver.observability.context import LogContext
from refserver.observability.logs import REDACTED, ContextFilter, JsonFormatter, TextFormatter, redact, redact_text
from refserver.observability.metrics import Metrics, Stat, StatisticsCollector
from tests.conftest import INIT_PARAMS, POST_HEADERS, ServerProcess, free_port, modern_request, wait_until
from tests.redis_server import RedisServer

FLOW_TIMEOUT = 60.0
ECHO_CALLS = 5
QUIET_SETTINGS = {"log_message_interval": 3600, "subscription_update_interval": 3600}
"""No periodic demo notifications: the event log then counts exactly what the test's calls append."""
JWT_LIKE = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlLW5vdC12YWxpZC0wMTIzNDU2Nzg5"


# --- helpers ---------------------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def rpc(
    http: httpx.AsyncClient, server: ServerProcess, token: str | None, session_id: str | None, body: dict[str, Any]
) -> httpx.Response:
    headers = {**POST_HEADERS, **(bearer(token) if token else {})}
    if session_id:
        headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": INIT_PARAMS["protocolVersion"]}
    return await http.post(server.mcp_url, json=body, headers=headers)


async def open_session(http: httpx.AsyncClient, server: ServerProcess, token: str | None) -> str:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
    response = await rpc(http, server, token, None, init)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    note = await rpc(http, server, token, session_id, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert note.status_code == 202, note.text
    return session_id


async def echo(http: httpx.AsyncClient, server: ServerProcess, token: str | None, session_id: str, i: int) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": i + 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": f"m{i}"}},
    }
    response = await rpc(http, server, token, session_id, call)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"].endswith(f"m{i}")


async def confidential_client_flow(http: httpx.AsyncClient, discovery: Discovery, *, user: str) -> dict[str, Any]:
    """Register a client_secret_basic client and run the code flow; returns everything secret it handled."""
    registered = await http.post(
        discovery.metadata["registration_endpoint"],
        json={
            "client_name": "observability test (confidential)",
            "redirect_uris": [LOOPBACK_REDIRECT],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        },
    )
    assert registered.status_code == 201, registered.text
    client = registered.json()
    verifier = secrets.token_urlsafe(48)
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(16),
        "resource": discovery.resource,
        "scope": "mcp offline_access",
    }
    final_url = await act_as_person(
        http, f"{discovery.metadata['authorization_endpoint']}?{urlencode(query)}", user=user
    )
    code = parse_qs(urlsplit(final_url).query)["code"][0]
    exchanged = await http.post(
        discovery.metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": LOOPBACK_REDIRECT,
            "code_verifier": verifier,
            "resource": discovery.resource,
        },
        auth=(client["client_id"], client["client_secret"]),
    )
    assert exchanged.status_code == 200, exchanged.text
    return {"client": client, "code": code, "verifier": verifier, "tokens": exchanged.json()}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every non-empty line of a server log, parsed: the test fails on the first line that is not JSON."""
    documents = []
    for number, line in enumerate(log.splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
        assert isinstance(document, dict), line
        assert {"ts", "level", "logger", "message"} <= set(document), line
        documents.append(document)
    return documents


# --- the logs of a whole OAuth flow ------------------------------------------------------------------------------


async def test_the_log_of_a_full_oauth_flow_is_json_and_holds_no_secret(make_server: Any) -> None:
    server = make_server(auth_mode="embedded", log_level="DEBUG", access_log="on", **QUIET_SETTINGS)
    secrets_seen: list[str] = []
    request_id = "obs-test-request-0001"
    with trio.fail_after(FLOW_TIMEOUT):
        async with httpx.AsyncClient(timeout=20.0) as http:
            public = await obtain_tokens(http, server.mcp_url, user="alice", scope="mcp offline_access")
            secrets_seen += [public["access_token"], public["refresh_token"]]
            discovery = await discover(http, server.mcp_url)
            flow = await confidential_client_flow(http, discovery, user="bob")
            client, tokens = flow["client"], flow["tokens"]
            secrets_seen += [flow["code"], flow["verifier"], client["client_secret"]]
            secrets_seen += [tokens["access_token"], tokens["refresh_token"]]
            basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
            secrets_seen.append(basic)

            # MCP calls with each client's token; one carries our request id, which is echoed and logged.
            session = await open_session(http, server, tokens["access_token"])
            for i in range(3):
                await echo(http, server, tokens["access_token"], session, i)
            listed = await http.post(
                server.mcp_url,
                json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"},
                headers={
                    **POST_HEADERS,
                    **bearer(tokens["access_token"]),
                    "Mcp-Session-Id": session,
                    "MCP-Protocol-Version": INIT_PARAMS["protocolVersion"],
                    "X-Request-ID": request_id,
                },
            )
            assert listed.status_code == 200 and listed.headers["x-request-id"] == request_id
            public_session = await open_session(http, server, public["access_token"])
            await echo(http, server, public["access_token"], public_session, 0)

            # Refresh (rotation) with the confidential client, then revoke the new tokens.
            refreshed = await http.post(
                discovery.metadata["token_endpoint"],
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                auth=(client["client_id"], client["client_secret"]),
            )
            assert refreshed.status_code == 200, refreshed.text
            new = refreshed.json()
            secrets_seen += [new["access_token"], new["refresh_token"]]
            await echo(http, server, new["access_token"], session, 10)
            for token, hint in ((new["refresh_token"], "refresh_token"), (new["access_token"], "access_token")):
                revoked = await http.post(
                    discovery.metadata["revocation_endpoint"],
                    data={"token": token, "token_type_hint": hint},
                    auth=(client["client_id"], client["client_secret"]),
                )
                assert revoked.status_code == 200, revoked.text

            # Refusals: a revoked token, a forged JWT, a reused code, a bad client secret, no token at all.
            gone = await rpc(http, server, new["access_token"], session, {"jsonrpc": "2.0", "id": 20, "method": "ping"})
            assert gone.status_code == 401
            forged = await rpc(http, server, JWT_LIKE, session, {"jsonrpc": "2.0", "id": 21, "method": "ping"})
            assert forged.status_code == 401
            secrets_seen.append(JWT_LIKE)
            reused = await http.post(
                discovery.metadata["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": flow["code"],
                    "redirect_uri": LOOPBACK_REDIRECT,
                    "code_verifier": flow["verifier"],
                },
                auth=(client["client_id"], client["client_secret"]),
            )
            assert reused.status_code == 400
            wrong_secret = "wrong-secret-" + secrets.token_urlsafe(16)
            secrets_seen.append(wrong_secret)
            refused = await http.post(
                discovery.metadata["token_endpoint"],
                data={"grant_type": "refresh_token", "refresh_token": public["refresh_token"]},
                auth=(client["client_id"], wrong_secret),
            )
            assert refused.status_code == 401
            anonymous = await rpc(http, server, None, None, {"jsonrpc": "2.0", "id": 0, "method": "initialize"})
            assert anonymous.status_code == 401
            deleted = await http.delete(
                server.mcp_url, headers={**bearer(public["access_token"]), "Mcp-Session-Id": public_session}
            )
            assert deleted.status_code == 204

    assert server.stop() == 0
    log = server.log()
    documents = json_lines(log)
    for secret in secrets_seen:
        assert secret not in log, f"a secret reached the log: {secret[:12]}..."
    assert "Bearer " not in log
    assert "Basic " not in log

    events = [d.get("event") for d in documents]
    access = [d for d in documents if d.get("event") == "http.access"]
    assert {"session.created", "session.closed", "auth.refused", "auth.accepted", "server.draining"} <= set(events)
    assert {d["reason"] for d in documents if d.get("event") == "auth.refused"} == {"invalid_token", "missing_token"}
    assert all(d["request_id"] and d["status"] and "?" not in d["path"] for d in access)
    assert {(d["method"], d["route"]) for d in access} >= {
        ("POST", "/register"),
        ("GET", "/authorize"),
        ("POST", "/token"),
        ("POST", "/revoke"),
        ("POST", "/mcp"),
        ("DELETE", "/mcp"),
    }
    tagged = [d for d in documents if d.get("request_id") == request_id]
    assert [d["path"] for d in tagged if d.get("event") == "http.access"] == ["/mcp"]
    calls = [d for d in access if d["method"] == "POST" and d["route"] == "/mcp" and d["status"] == 200]
    assert calls and all(d.get("session_id") for d in calls)
    closed = [d for d in documents if d.get("event") == "session.closed"]
    assert {d["session_id"] for d in closed} == {session, public_session}
    assert {d["reason"] for d in closed} == {"deleted", "shutdown"}
    assert any(d["logger"] == "hypercorn.error" and "Running on" in d["message"] for d in documents)


async def test_an_echo_call_logs_nothing_with_default_settings(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(**QUIET_SETTINGS)
    session = await open_session(http, server, None)
    await echo(http, server, None, session, 0)

    def created() -> list[str]:
        return [d["session_id"] for d in json_lines(server.log()) if d.get("event") == "session.created"]

    await wait_until(lambda: created() == [session], 10, "the session.created line")
    quiet_from = len(server.log())
    for i in range(20):
        await echo(http, server, None, session, i)
    health = await http.get(f"{server.url}/health")
    assert health.status_code == 200
    # A marker: the server logs a new session after whatever it did for the calls above, so once the marker's
    # line is there, anything those calls logged is there too (before it).
    marker = await open_session(http, server, None)
    await wait_until(lambda: created() == [session, marker], 10, "the marker session's session.created line")
    logged = json_lines(server.log()[quiet_from:])
    assert [(d.get("event"), d.get("session_id")) for d in logged] == [("session.created", marker)], logged


async def test_request_ids_are_echoed_and_hostile_ones_replaced(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(access_log="on")
    kept = await http.get(f"{server.url}/health", headers={"X-Request-ID": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42"
    for hostile in ("x" * 65, "has space", "é"):
        response = await http.get(f"{server.url}/health", headers={"X-Request-ID": hostile.encode()})
        generated = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", generated), generated
    missing = await http.get(f"{server.url}/no-such-page")
    assert missing.status_code == 404 and missing.headers["x-request-id"]

    def access_lines() -> list[dict[str, Any]]:
        return [d for d in json_lines(server.log()) if d.get("event") == "http.access"]

    # The 404 was the last request: once its line is written, so are the earlier ones.
    await wait_until(lambda: any(d["path"] == "/no-such-page" for d in access_lines()), 10, "the 404's access line")
    access = access_lines()
    assert [d["path"] for d in access if d["request_id"] == "trace-42"] == ["/health"]
    assert access[-1]["route"] is None and access[-1]["status"] == 404


async def test_a_2026_request_logs_in_its_callers_trace(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(access_log="on")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body, headers = modern_request(
        "tools/call", {"name": "echo", "arguments": {"message": "x"}}, traceparent=traceparent
    )
    answered = await http.post(server.mcp_url, json=body, headers={**headers, "X-Request-ID": "traced-1"})
    assert answered.status_code == 200, answered.text

    def traced() -> list[dict[str, Any]]:
        return [d for d in json_lines(server.log()) if d.get("request_id") == "traced-1"]

    await wait_until(traced, 10, "the access line of the traced request")
    assert traced()[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert traced()[0]["parent_span_id"] == "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_traceparent_rules(value: str | None, ids: tuple[str, str] | None) -> None:
    assert context.traceparent_ids(value) == ids


async def test_text_format_is_one_line_per_record(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(log_format="text", access_log="on")
    await http.get(f"{server.url}/health", headers={"X-Request-ID": "text-format-1"})

    def access_lines() -> list[str]:
        return [line for line in server.log().splitlines() if "refserver.access" in line]

    await wait_until(lambda: any("text-format-1" in line for line in access_lines()), 10, "the access line")
    lines = access_lines()
    assert lines and "[event=http.access request_id=text-format-1]" in lines[-1]
    assert '"GET /health HTTP/1.1" 200 ' in lines[-1]


# --- metrics -------------------------------------------------------------------------------------------------------


async def test_counters_move_by_exactly_the_calls_made(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(auth_mode="embedded", metrics="on", **QUIET_SETTINGS)
    metrics_url = f"{server.url}/metrics"
    with trio.fail_after(FLOW_TIMEOUT):
        token = (await obtain_tokens(http, server.mcp_url, user="carol"))["access_token"]
        first = await open_session(http, server, token)
        before = await scrape(http, metrics_url)

        second = await open_session(http, server, token)  # POST 200 + POST 202
        for i in range(ECHO_CALLS):
            await echo(http, server, token, first, i)  # POST 200 each
        bad = await rpc(http, server, "not-a-token-" + "x" * 20, first, {"jsonrpc": "2.0", "id": 9, "method": "ping"})
        assert bad.status_code == 401  # POST 401
        deleted = await http.delete(server.mcp_url, headers={**bearer(token), "Mcp-Session-Id": first})
        assert deleted.status_code == 204  # DELETE 204

        # The deleted session leaves the registry once its tasks are cancelled: wait for that to be visible.
        async def one_session_left() -> bool:
            return bool((await http.get(f"{server.url}/health")).json()["sessions"] == 1)

        await wait_until(one_session_left, 10, "the deleted session to leave the registry")
        after = await scrape(http, metrics_url)

    requests = "refserver_http_requests_total"
    assert delta(before, after, requests, method="POST", route="/mcp", status="200") == ECHO_CALLS + 1
    assert delta(before, after, requests, method="POST", route="/mcp", status="202") == 1
    assert delta(before, after, requests, method="POST", route="/mcp", status="401") == 1
    assert delta(before, after, requests, method="DELETE", route="/mcp", status="204") == 1
    assert delta(before, after, requests, method="GET", route="/metrics", status="200") == 1  # the first scrape
    histogram = "refserver_http_request_duration_seconds_count"
    assert delta(before, after, histogram, method="POST", route="/mcp", status="200") == ECHO_CALLS + 1
    assert delta(before, after, histogram, method="POST", route="/mcp", status="401") == 1
    infinite = "refserver_http_request_duration_seconds_bucket"
    labels = {"method": "POST", "route": "/mcp", "status": "200", "le": "+Inf"}
    assert delta(before, after, infinite, **labels) == ECHO_CALLS + 1

    failures = "refserver_auth_failures_total"
    assert delta(before, after, failures, reason="invalid_token") == 1
    for reason in ("missing_token", "insufficient_scope", "auth_server_unavailable"):
        assert delta(before, after, failures, reason=reason) == 0
    assert delta(before, after, "refserver_token_verifications_total", outcome="rejected") == 1
    assert delta(before, after, "refserver_token_verifications_total", outcome="accepted") == ECHO_CALLS + 3

    assert value(before, "refserver_sessions") == 1
    assert value(after, "refserver_sessions") == 1  # `second` lives, `first` is gone
    assert delta(before, after, "refserver_sessions_created_total") == 1
    assert delta(before, after, "refserver_sessions_deleted_total") == 1
    # Each call's answer; initialize's goes straight to its response, never through the log.
    assert delta(before, after, "refserver_event_log_events_appended_total") == ECHO_CALLS
    assert value(after, "refserver_http_requests_in_flight") == 1  # the scrape itself
    assert value(after, "refserver_http_open_streams") == 0
    assert value(after, "refserver_mcp_requests_in_flight") == 0
    assert value(after, "refserver_auth_server_up") == 1
    assert value(after, "process_resident_memory_bytes") > 0
    assert second


async def test_open_sse_streams_are_gauged(make_server: Any, http: httpx.AsyncClient) -> None:
    server = make_server(metrics="on", **QUIET_SETTINGS)
    session = await open_session(http, server, None)
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    with trio.fail_after(20):
        async with http.stream("GET", server.mcp_url, headers=headers) as stream:
            assert stream.status_code == 200
            during = await scrape(http, f"{server.url}/metrics")

        async def no_open_stream() -> bool:
            return value(await scrape(http, f"{server.url}/metrics"), "refserver_http_open_streams") == 0

        await wait_until(no_open_stream, 10, "the closed stream to leave the gauge")
    assert value(during, "refserver_http_open_streams") == 1
    assert value(during, "refserver_http_requests_total", method="GET", route="/mcp", status="200") == 1


async def test_metrics_are_off_by_default_and_can_have_their_own_listener(
    make_server: Any, http: httpx.AsyncClient
) -> None:
    default = make_server()
    assert (await http.get(f"{default.url}/metrics")).status_code == 404

    port = free_port()
    server = make_server(metrics=f"127.0.0.1:{port}")
    assert (await http.get(f"{server.url}/metrics")).status_code == 404  # not on the public port
    await http.get(f"{server.url}/health")
    samples = await scrape(http, f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "refserver_http_requests_total", method="GET", route="/health", status="200") >= 1
    assert value(samples, "refserver_http_requests_total", method="GET", route="/metrics", status="200") == 0
    assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404


async def test_redis_metrics_and_state_changes(
    make_server: Any, http: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, metrics="on", **QUIET_SETTINGS)
    metrics_url = f"{server.url}/metrics"
    with trio.fail_after(FLOW_TIMEOUT):
        session = await open_session(http, server, None)
        await echo(http, server, None, session, 0)
        samples = await scrape(http, metrics_url)
        assert value(samples, "refserver_redis_up") == 1
        assert value(samples, "refserver_pubsub_connected") == 1
        assert value(samples, "refserver_pubsub_channels") >= 1
        assert value(samples, "refserver_sessions") == 1
        observed = sum(
            value(samples, "refserver_redis_command_duration_seconds_count", kind=kind)
            for kind in ("command", "pubsub")
        )
        # Every call is observed when it ends: started = ended + still running, at the instant of the scrape.
        started = value(samples, "refserver_redis_commands_total")
        assert started > 0 and observed + value(samples, "refserver_redis_commands_in_flight") == started
        assert value(samples, "refserver_redis_command_duration_seconds_count", kind="command") > 0

        def pubsub_connected(expected: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return value(await scrape(http, metrics_url), "refserver_pubsub_connected") == expected

            return check

        redis_server.kill()
        await wait_until(pubsub_connected(0), 10, "the pub/sub subscriber to notice Redis is gone")
        down = await scrape(http, metrics_url)
        assert value(down, "refserver_redis_errors_total") > value(samples, "refserver_redis_errors_total")
        redis_server.start()
        await wait_until(pubsub_connected(1), 10, "the pub/sub subscriber to reconnect")
        assert value(await scrape(http, metrics_url), "refserver_pubsub_reconnects_total") >= 1

        def logged_events() -> list[Any]:
            return [d.get("event") for d in json_lines(server.log())]

        # The watcher compares the counters every second: wait for the state changes it logs.
        changes = ("redis.bus.connected", "redis.failing", "redis.bus.lost", "redis.bus.reconnected", "redis.recovered")
        await wait_until(lambda: set(changes) <= set(logged_events()), 10, f"the watcher to log {changes}")
    events = logged_events()
    assert events.index("redis.failing") < events.index("redis.recovered")


# --- in-process: redaction, formatting, settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"token {JWT_LIKE} refused", "token", JWT_LIKE),
        ("Authorization: Bearer abcdefghijklmnop0123", "Authorization", "abcdefghijklmnop0123"),
        ("authorization: basic dXNlcjpwYXNzd29yZA==", "authorization", "dXNlcjpwYXNzd29yZA=="),
        ("send Authorization: Bearer <token>", "send", "Bearer <token>"),
        ("/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz", "state=xyz", "SplxlOBeZQQYbYS6WxSbIA"),
        ('{"refresh_token": "tGzv3JOkF0XG5Qx2TlKWIA", "token_type": "Bearer"}', "token_type", "tGzv3JOkF0XG5Qx2TlKWIA"),
        ("client_secret=s3cr3t-value&client_id=abc", "client_id=abc", "s3cr3t-value"),
        ("code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r", "code_verifier", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r"),
    ],
)
def test_redaction_masks_credentials_by_shape(text: str, kept: str, gone: str) -> None:
    redacted = redact_text(text)
    assert gone not in redacted and kept in redacted and REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        '{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}}',
        "session AfB_-QOmxsfbUWfzhBSWKjNXpKL5__bnOWivzkXOKcE closed here (deleted)",
        "the bearer token is malformed",
        "refserver.observability.logs loaded; stream r0123456789ab.12",
        "authorization server http://127.0.0.1:3001 is ok: it answers again",
    ],
)
def test_redaction_leaves_ordinary_text_alone(text: str) -> None:
    assert redact_text(text) == text


def test_fields_named_like_credentials_are_masked() -> None:
    value = {
        "access_token": "opaque",
        "client_secret": "opaque",
        "Authorization": "opaque",
        "code": "opaque",
        "status_code": 200,
        "nested": {"password": "x", "list": [JWT_LIKE, 1, None]},
        "user": "alice",
    }
    assert redact(value) == {
        "access_token": REDACTED,
        "client_secret": REDACTED,
        "Authorization": REDACTED,
        "code": REDACTED,
        "status_code": 200,
        "nested": {"password": REDACTED, "list": [REDACTED, 1, None]},
        "user": "alice",
    }


def _record(message: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad token {JWT_LIKE}")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("refserver.test", logging.ERROR, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_context_ids_fields_and_a_redacted_traceback() -> None:
    record = _record("failed for %s", "alice", exc=True, refresh_token="opaque-refresh", tool="echo")
    token = context.enter(LogContext(request_id="req-1", session_id="sess-1"))
    try:
        assert ContextFilter().filter(record)
    finally:
        context.leave(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    document = json.loads(line)
    assert document["ts"].endswith("Z") and document["level"] == "ERROR" and document["logger"] == "refserver.test"
    assert document["message"] == "failed for alice"
    assert (document["request_id"], document["session_id"]) == ("req-1", "sess-1")
    assert document["refresh_token"] == REDACTED and document["tool"] == "echo"
    assert "Traceback" in document["exc"] and "ValueError" in document["exc"] and JWT_LIKE not in document["exc"]


def test_known_messages_of_other_modules_get_event_names() -> None:
    record = logging.LogRecord(
        "refserver.registry", logging.INFO, __file__, 1, "session %s closed here (%s)", ("s-1", "idle"), None
    )
    ContextFilter().filter(record)
    document = json.loads(JsonFormatter().format(record))
    assert (document["event"], document["session_id"], document["reason"]) == ("session.closed", "s-1", "idle")


def test_text_format_redacts_too() -> None:
    record = _record("Authorization: Bearer abcdefghijklmnop0123", request_id="r-9")
    ContextFilter().filter(record)
    line = TextFormatter().format(record)
    assert "abcdefghijklmnop0123" not in line and "request_id=r-9" in line


def test_request_id_rules() -> None:
    assert context.sane_request_id("abc-DEF_123.4") == "abc-DEF_123.4"
    assert context.sane_request_id("x" * 64) == "x" * 64
    for bad in (None, "", "x" * 65, "a b", "tab\t", "é"):
        assert context.sane_request_id(bad) is None
    assert len({context.new_request_id() for _ in range(100)}) == 100
    assert context.loggable_session_id("x" * 200) == "x" * 128
    assert context.loggable_session_id("bad\nid") is None


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("off", "off"), ("ON", "on"), ("127.0.0.1:9100", "127.0.0.1:9100"), ("[::1]:9100", "[::1]:9100")],
)
def test_metrics_setting_accepts_off_on_and_a_listener(raw: str, parsed: str) -> None:
    assert Settings.from_env({"REFSERVER_METRICS": raw}, dotenv_path=None).metrics == parsed


@pytest.mark.parametrize("raw", ["yes", "9100", ":9100", "host:", "host:0", "host:70000", "::1:9100"])
def test_metrics_setting_refuses_anything_else(raw: str) -> None:
    with pytest.raises(ConfigError, match="REFSERVER_METRICS"):
        Settings.from_env({"REFSERVER_METRICS": raw}, dotenv_path=None)


def test_log_settings() -> None:
    settings = Settings.from_env({}, dotenv_path=None)
    assert (settings.log_format, settings.access_log, settings.metrics) == ("json", "off", "off")
    settings = Settings.from_env({"REFSERVER_LOG_FORMAT": "TEXT", "REFSERVER_ACCESS_LOG": "on"}, dotenv_path=None)
    assert (settings.log_format, settings.access_log) == ("text", "on")
    for name, raw in (("LOG_FORMAT", "xml"), ("ACCESS_LOG", "yes")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({f"REFSERVER_{name}": raw}, dotenv_path=None)


def test_metric_labels_stay_bounded_and_statistics_are_read_at_scrape_time() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.observe_request("BREW", "/mcp", 418, 0.01)
    metrics.observe_request("POST", "/mcp", 200, 0.002)
    metrics.observe_request("POST", "/mcp", 200, 0.003)
    stats: dict[str, Any] = {"sessions": 2, "draining": False}
    metrics.add_statistics(
        lambda: stats,
        [
            Stat("sessions", "refserver_sessions", "gauge", "Live sessions."),
            Stat("draining", "refserver_draining", "gauge", "Draining."),
            Stat("missing", "refserver_missing", "counter", "Not in the dict: not exported."),
        ],
    )
    stats["sessions"] = 3
    samples: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    assert value(samples, "refserver_http_requests_total", method="other", route="/mcp", status="418") == 1
    assert value(samples, "refserver_http_requests_total", method="POST", route="/mcp", status="200") == 2
    assert value(samples, "refserver_sessions") == 3
    assert value(samples, "refserver_draining") == 0
    assert not any(name == "refserver_missing_total" for name, _ in samples)
    assert not any(name.endswith("_created") for name, _ in samples)


def test_statistics_collector_ignores_non_numbers() -> None:
    collector = StatisticsCollector(
        lambda: {"a": "text", "b": None, "c": 1.5}, [Stat(k, f"m_{k}", "gauge", k) for k in "abc"]
    )
    assert [family.name for family in collector.collect()] == ["m_c"]


def test_every_named_log_event_is_logged_by_the_module_it_names() -> None:
    """A message that moves to another module (or is reworded) would silently lose its `event` name."""
    import importlib
    import inspect

    from refserver.observability.logs import KNOWN_EVENTS

    for logger_name, message in KNOWN_EVENTS:
        source = inspect.getsource(importlib.import_module(logger_name))
        assert json.dumps(message) in source, f"{logger_name} no longer logs {message!r}"
