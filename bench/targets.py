"""The issue's targets, evaluated on one run's numbers (ratios from the same run: per-run ratio, median)."""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from bench.options import RATIO_CONCURRENCY

C = str(RATIO_CONCURRENCY)


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
    ratio, each = _ratio(data, "S1", "PJ")
    out.append(
        _target(
            "S1/PJ",
            f"S1 at c={C} >= 1.5 x PJ (SDK, JSON answers)",
            ratio,
            1.5,
            higher_is_better=True,
            unit="x",
            detail=_list(each),
        )
    )
    ratio, each = _ratio(data, "M1", "PJ")
    out.append(
        _target(
            "M1/PJ",
            f"M1 (2026-07-28, no session, auth on) at c={C} >= 1.2 x PJ",
            ratio,
            1.2,
            higher_is_better=True,
            unit="x",
            detail=_list(each),
        )
    )
    s1 = scenarios.get("S1", {}).get("points", {}).get(C)
    out.append(
        _target(
            "S1 p99",
            f"S1 p99 at c={C} <= 40 ms",
            s1["median"]["p99_ms"] if s1 else None,
            40.0,
            higher_is_better=False,
            unit="ms",
        )
    )
    ratio, each = _ratio(data, "S2", "S1")
    out.append(
        _target("S2/S1", f"S2 at c={C} >= 0.8 x S1", ratio, 0.8, higher_is_better=True, unit="x", detail=_list(each))
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
                + (
                    f"; a bare ASGI stream on the same worker alone costs {s4['floor']['rss_per_stream_kib']:.1f} KiB"
                    if s4.get("floor")
                    else ""
                )
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


def _list(values: list[float]) -> str:
    return "runs: " + ", ".join(f"{v:.2f}" for v in values) if values else ""
