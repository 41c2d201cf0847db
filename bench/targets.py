"""The issue's targets, evaluated on one run's numbers (ratios from the same run: per-run ratio, median)."""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from bench.options import RATIO_CONCURRENCY

C = str(RATIO_CONCURRENCY)
CLUSTER_CONNECTIONS_PER_NODE = 8 + 2
"""refserver's bound per cluster node: its command pool (MAX_CONNECTIONS, 8, in refserver/backend/redis/connection.py)
plus the bus's subscribers (one per node owning one of its two channels)."""


def _runs(data: dict[str, Any], scenario: str, concurrency: str = C) -> list[dict[str, Any]] | None:
    point = data["scenarios"].get(scenario, {}).get("points", {}).get(concurrency)
    return point["runs"] if point else None


def _ratio(data: dict[str, Any], top: str, bottom: str) -> tuple[float | None, list[float]]:
    """Median over runs of (top / bottom) throughput at the ratio concurrency, each ratio within one run."""
    a, b = _runs(data, top), _runs(data, bottom)
    if not a or not b:
        return None, []
    ratios = [x["requests_per_s"] / y["requests_per_s"] for x, y in zip(a, b, strict=False) if y["requests_per_s"]]
    return (median(ratios) if ratios else None), ratios


def _target(
    ident: str, text: str, measured: float | None, goal: float, *, higher_is_better: bool, unit: str, detail: str = ""
) -> dict[str, Any]:
    met = None
    if measured is not None and not (isinstance(measured, float) and math.isnan(measured)):
        met = measured >= goal if higher_is_better else measured <= goal
    return {
        "id": ident,
        "target": text,
        "measured": measured,
        "goal": goal,
        "unit": unit,
        "met": met,
        "detail": detail,
    }


def evaluate(data: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = data["scenarios"]
    out: list[dict[str, Any]] = []

    ratio, each = _ratio(data, "S1", "S0")
    out.append(
        _target("S1/S0", f"S1 at c={C} >= 0.6 x S0", ratio, 0.6, higher_is_better=True, unit="x", detail=_list(each))
    )
    ratio, each = _ratio(data, "S1T", "S1")
    out.append(
        _target(
            "S1T/S1",
            f"S1 with tracing on (OTLP export) at c={C} >= 0.8 x S1",
            ratio,
            0.8,
            higher_is_better=True,
            unit="x",
            detail=_list(each),
        )
    )
    ratio, each = _ratio(data, "S1", "P")
    out.append(
        _target(
            "S1/P",
            f"S1 at c={C} >= 1.5 x P (SDK defaults)",
            ratio,
            1.5,
            higher_is_better=True,
            unit="x",
            detail=_list(each),
        )
    )
    # Issue 17: the SDK's JSON server without auth (PJ) and with the same JWT checked by its middleware (PJA).
    for top, goal, what in (("S1", 1.0, "S1"), ("M1", 1.2, "M1 (2026-07-28, no session, auth on)")):
        for peer, peer_text in (("PJ", "PJ (SDK, JSON answers, no auth)"), ("PJA", "PJA (SDK, JSON answers, auth)")):
            ratio, each = _ratio(data, top, peer)
            out.append(
                _target(
                    f"{top}/{peer}",
                    f"{what} at c={C} >= {goal} x {peer_text}",
                    ratio,
                    goal,
                    higher_is_better=True,
                    unit="x",
                    detail=_list(each),
                )
            )
    for name in ("S1", "M1"):
        point = scenarios.get(name, {}).get("points", {}).get(C)
        out.append(
            _target(
                f"{name} p99",
                f"{name} p99 at c={C} <= 25 ms",
                point["median"]["p99_ms"] if point else None,
                25.0,
                higher_is_better=False,
                unit="ms",
                detail=_list([run["latency_ms"]["p99"] for run in point["runs"]]) + " ms" if point else "",
            )
        )
    ratio, each = _ratio(data, "S2", "S1")
    out.append(
        _target("S2/S1", f"S2 at c={C} >= 0.8 x S1", ratio, 0.8, higher_is_better=True, unit="x", detail=_list(each))
    )
    ratio, each = _ratio(data, "S2C", "S2")
    out.append(
        _target(
            "S2C/S2",
            f"S2C (Redis Cluster, 3 masters) at c={C} >= 0.9 x S2 (single Redis)",
            ratio,
            0.9,
            higher_is_better=True,
            unit="x",
            detail=_list(each),
        )
    )
    s3 = scenarios.get("S3", {}).get("median")
    out.append(
        _target(
            "S3",
            "S3 adds <= 1 ms to the median at c=1",
            s3["added_median_ms"] if s3 else None,
            1.0,
            higher_is_better=False,
            unit="ms",
            detail=f"{s3['one_instance_p50_ms']:.2f} -> {s3['alternating_p50_ms']:.2f} ms" if s3 else "",
        )
    )
    s4 = scenarios.get("S4")
    sessions = s4["sessions_ready"] if s4 else 0
    out.append(
        _target(
            "S4 RSS",
            "S4 <= 25 KiB RSS per idle session with its stream",
            s4["rss_per_session_kib"] if s4 else None,
            25.0,
            higher_is_better=False,
            unit="KiB",
            detail=(
                f"{sessions} streams open when measured; the sessions alone, before any stream: "
                f"{s4['rss_session_only_kib']:.1f} KiB each"
                + ("; streams were dropped, so the per-stream part is overstated" if s4.get("streams_dropped") else "")
                + _floor_detail(s4.get("floor"))
            )
            if s4
            else "",
        )
    )
    if s4 and s4.get("redis_connections_before"):
        before, after = s4["redis_connections_before"]["refserver"], s4["redis_connections_after"]["refserver"]
        out.append(
            {
                "id": "S4 Redis",
                "target": "S4 constant Redis connections",
                "measured": after,
                "goal": before,
                "unit": "connections",
                "met": before == after,
                "detail": f"{before} before, {after} with {sessions} streams",
            }
        )
    notify = _target(
        "S4 notify",
        f"S4 a notification reaches all {s4['sessions_requested'] if s4 else 'N'} streams <= 2 s",
        s4["notify_all_s"] if s4 else None,
        2.0,
        higher_is_better=False,
        unit="s",
        detail=_list([r["spread_s"] for r in s4["rounds"]]) + " s" if s4 and s4["rounds"] else "",
    )
    lost = (s4.get("streams_dropped", 0) + s4.get("sessions_failed", 0)) if s4 else 0
    if s4 and lost:
        # A stream that never opened, or that the server dropped, never gets the notification.
        notify["met"] = False
        notify["detail"] = (notify["detail"] + "; " if notify["detail"] else "") + (
            f"{lost} of {s4['sessions_requested']} streams failed or were dropped by the server"
        )
    out.append(notify)
    out += _cluster_stream_targets(scenarios)
    out += _s4b_targets(scenarios.get("S4b"))
    # Issue 17, goal 4: 1,000 new sessions/s on the memory backend, 600/s on Redis.
    for target_id, backend, goal in (("S5", "memory", 1000.0), ("S5 Redis", "redis", 600.0)):
        s5 = scenarios.get("S5", {}).get(backend)
        out.append(
            _target(
                target_id,
                f"S5 ({backend}) >= {goal:,.0f} new sessions per second",
                s5["median"]["sessions_per_s"] if s5 else None,
                goal,
                higher_is_better=True,
                unit="/s",
            )
        )
    return out


def _cluster_stream_targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """S4C against S4: the notifier's round over streams whose sessions are spread over the cluster's slots, and the
    connections per node."""
    s4, s4c = scenarios.get("S4"), scenarios.get("S4C")
    out = []
    s4_round = s4["notify_all_s"] if s4 and s4.get("rounds") else None
    s4c_round = s4c["notify_all_s"] if s4c and s4c.get("rounds") else None
    ratio = s4c_round / s4_round if s4_round and s4c_round is not None else None
    lost = (s4c.get("streams_dropped", 0) + s4c.get("sessions_failed", 0)) if s4c else 0
    notify = _target(
        "S4C notify",
        "S4C a notification reaches every stream (sessions over the cluster's slots) in <= 1.5 x S4's round",
        ratio,
        1.5,
        higher_is_better=False,
        unit="x",
        detail=(
            f"S4C {_seconds(s4c_round)} ({_list([r['spread_s'] for r in s4c['rounds']])} s) against S4 "
            f"{_seconds(s4_round)}, {s4c['sessions_requested']} streams each"
            if s4c
            else ""
        ),
    )
    if s4c and lost:
        notify["met"] = False
        notify["detail"] += f"; {lost} of {s4c['sessions_requested']} streams failed or were dropped by the server"
    out.append(notify)
    by_node_before, by_node_after = (
        (s4c.get("redis_connections_by_node_before"), s4c.get("redis_connections_by_node_after"))
        if s4c
        else (None, None)
    )
    if by_node_before and by_node_after:
        before = {node: counts["refserver"] for node, counts in by_node_before.items()}
        after = {node: counts["refserver"] for node, counts in by_node_after.items()}
        out.append(
            _target(
                "S4C Redis",
                f"S4C Redis connections per cluster node bounded (<= {CLUSTER_CONNECTIONS_PER_NODE}), whatever the "
                "number of streams",
                max(after.values()),
                CLUSTER_CONNECTIONS_PER_NODE,
                higher_is_better=False,
                unit="connections per node at most",
                detail="refserver's per node (port: before -> with the streams; the cluster pools open lazily): "
                + ", ".join(f"{node}: {before[node]} -> {after.get(node)}" for node in before),
            )
        )
    return out


def _seconds(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f} s"


def _list(values: list[float]) -> str:
    return "runs: " + ", ".join(f"{v:.2f}" for v in values) if values else ""


def _s4b_targets(s4b: dict[str, Any] | None) -> list[dict[str, Any]]:
    floor = s4b.get("floor") if s4b else None
    out = [
        _target(
            "S4b RSS",
            "S4b <= 20 KiB RSS per idle subscriptions/listen stream",
            s4b["rss_per_stream_kib"] if s4b else None,
            20.0,
            higher_is_better=False,
            unit="KiB",
            detail=(f"{s4b['streams_ready']} streams open when measured" + _floor_detail(floor)) if s4b else "",
        )
    ]
    if s4b and s4b.get("redis_connections_before"):
        before, after = s4b["redis_connections_before"]["refserver"], s4b["redis_connections_after"]["refserver"]
        out.append(
            {
                "id": "S4b Redis",
                "target": "S4b constant Redis connections",
                "measured": after,
                "goal": before,
                "unit": "connections",
                "met": before == after,
                "detail": f"{before} before, {after} with {s4b['streams_ready']} listen streams",
            }
        )
    notify = _target(
        "S4b notify",
        f"S4b a notification reaches all {s4b['streams_requested'] if s4b else 'N'} listen streams <= 2 s",
        s4b["notify_all_s"] if s4b else None,
        2.0,
        higher_is_better=False,
        unit="s",
        detail=_list([r["spread_s"] for r in s4b["rounds"]]) + " s" if s4b and s4b["rounds"] else "",
    )
    lost = (s4b["streams_dropped"] + s4b["streams_failed"]) if s4b else 0
    if s4b and lost:
        notify["met"] = False
        notify["detail"] = (notify["detail"] + "; " if notify["detail"] else "") + (
            f"{lost} of {s4b['streams_requested']} listen streams failed or were dropped by the server"
        )
    out.append(notify)
    return out


def _floor_detail(floor: dict[str, Any] | None) -> str:
    if not floor:
        return ""
    detail = f"; a bare ASGI stream on the same worker alone costs {floor['rss_per_stream_kib']:.1f} KiB"
    if floor.get("watched"):
        detail += f", {floor['watched']['rss_per_stream_kib']:.1f} KiB with a disconnect watcher and heartbeat scope"
    return detail
