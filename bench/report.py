"""bench/results/<timestamp>.json (every raw number), .md (tables, targets) and .png (the plot)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

SCENARIO_NAMES: Final = {
    "S0": "S0 bare Quart-Trio JSON endpoint (stack ceiling)",
    "S0A": "S0A bare ASGI function, no framework (the server's own ceiling)",
    "S1": "S1 refserver, tools/call echo, memory backend",
    "M1": "M1 refserver, tools/call echo in protocol 2026-07-28 (no session), memory backend",
    "S2": "S2 refserver, tools/call echo, Redis backend",
    "S2C": "S2C refserver, tools/call echo, Redis Cluster backend (3 masters + 3 replicas)",
    "P": "P official SDK MCPServer on uvicorn, no auth (SDK default: SSE answers)",
    "PJ": "PJ the same SDK server with json_response=True",
    "PJA": "PJA PJ behind the SDK's bearer middleware, verifying the same JWT",
}
PLOT_ORDER: Final = ("S0A", "S0", "S1", "M1", "S2", "S2C", "P", "PJ", "PJA")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def _code_line(code: dict[str, Any]) -> str:
    if not code:
        return "Code: not recorded."
    text = f"Code: commit {code['commit']}"
    if code.get("refserver_modified_since_commit"):
        text += " with uncommitted changes in refserver/"
    text += f" (refserver/ digest {code['refserver_digest']})"
    if code.get("changed_during_run"):
        text += "; **refserver/ changed on disk during the run**"
    return text + "."


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


CEILING_SHARES: Final = ("S0", "S1", "M1", "PJ", "PJA")


def _ceiling_table(s: dict[str, Any]) -> list[str]:
    """Each flood as a share of S0A, the bare ASGI function on the same worker (per run, then the median)."""
    ceiling = s.get("S0A", {}).get("points", {})
    shown = [name for name in CEILING_SHARES if name in s]
    if not ceiling or not shown:
        return []
    lines = [
        "",
        "Each flood as a share of S0A (a bare ASGI function on the same Hypercorn worker), per run, median shown:",
        "",
        "| conns | " + " | ".join(f"{name}/S0A" for name in shown) + " |",
        "| ---: | " + " | ".join("---:" for _ in shown) + " |",
    ]
    for c, point in ceiling.items():
        cells = []
        for name in shown:
            other = s[name].get("points", {}).get(c)
            ratios = [
                mine["requests_per_s"] / base["requests_per_s"]
                for mine, base in zip(other["runs"] if other else [], point["runs"], strict=False)
                if base["requests_per_s"]
            ]
            cells.append(f"{sorted(ratios)[len(ratios) // 2]:.2f}" if ratios else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def _median_rps(s: dict[str, Any], name: str, c: str) -> float | None:
    point = s.get(name, {}).get("points", {}).get(c)
    return point["median"]["requests_per_s"] if point else None


def _in_process_section(s: dict[str, Any]) -> list[str]:
    """IP's cost per request beside the floods: what the stack (S0A) leaves, and what a goal would allow."""
    ip = s.get("IP", {}).get("median")
    if not ip:
        return []
    lines = [
        "",
        "## IP: refserver's own cost per echo, in-process (no HTTP server in the measured path)",
        "",
        f"S1-shaped (2025 session) {ip['S1']:.0f} us, M1-shaped (2026, no session) {ip['M1']:.0f} us per request "
        "(median of the runs' batch medians). An application adding `t` per request to the bare ASGI function's "
        "1/S0A serves at most 1 / (1/S0A + t); the budget is the `t` a goal leaves.",
        "",
        "| conns | S0A req/s | S1 expected / measured | M1 expected / measured | PJ | budget for S1 >= 1.0 x PJ | "
        "budget for M1 >= 1.2 x PJ |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in s.get("S0A", {}).get("points", {}):
        ceiling, pj = _median_rps(s, "S0A", c), _median_rps(s, "PJ", c)
        if not ceiling:
            continue
        cells = [f"{ceiling:,.0f}"]
        for name in ("S1", "M1"):
            expected = 1 / (1 / ceiling + ip[name] / 1e6)
            measured = _median_rps(s, name, c)
            cells.append(f"{expected:,.0f} / {_fmt(measured, 0)}")
        cells.append(_fmt(pj, 0))
        for factor in (1.0, 1.2):
            budget = (1 / (factor * pj) - 1 / ceiling) * 1e6 if pj else None
            cells.append(f"{budget:.0f} us" if budget is not None else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


IR_ARMS = (
    ("S0A", "bare ASGI function on Hypercorn's trio worker (the stack alone)"),
    ("PJ", "the SDK's server answering JSON on uvicorn"),
    ("S1", "refserver, 2025 session, auth on"),
    ("M1", "refserver, 2026-07-28, no session, auth on"),
    ("IP S1", "refserver's application in-process, S1's request (our code alone)"),
    ("IP M1", "refserver's application in-process, M1's request (our code alone)"),
)


def _instructions_section(s: dict[str, Any]) -> list[str]:
    """IR's counts beside the floods' times at c=1: how much work each arm does, and how fast it gets done."""
    ir = s.get("IR")
    if not ir:
        return []
    counts = ir["instructions_per_request"]
    ip = s.get("IP", {}).get("median", {})
    lines = [
        "",
        "## IR: instructions per request (callgrind)",
        "",
        f"User-space instructions of the serving process per echo, {ir['requests']} sequential keep-alive requests "
        "counted after a warm-up (one run: the count does not depend on the machine's load). Time per request is the "
        "flood's at c=1 (IP's in-process median for the IP arms); divided by the count it is the rate the arm's "
        "instructions run at.",
        "",
        "| arm | what | instructions per request | x S0A | us per request (c=1) | ns per 1,000 instructions |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    base = counts.get("S0A")
    for name, what in IR_ARMS:
        count = counts.get(name)
        if count is None:
            continue
        if name.startswith("IP "):
            micros = ip.get(name.removeprefix("IP "))
        else:
            rps = _median_rps(s, name, "1")
            micros = 1e6 / rps if rps else None
        ratio = f"{count / base:.2f}" if base else "-"
        rate = f"{micros * 1e6 / count:.0f}" if micros else "-"
        lines.append(f"| {name} | {what} | {count / 1e6:.2f} M | {ratio} | {_fmt(micros, 0)} | {rate} |")
    for shape in ("S1", "M1"):
        if {shape, "S0A", f"IP {shape}"} <= counts.keys():
            extra = counts[shape] - counts["S0A"] - counts[f"IP {shape}"]
            lines.append("")
            lines.append(
                f"{shape} - (S0A + IP {shape}) = {extra / 1e6:+.2f} M ({extra / counts[shape]:+.0%} of {shape}): what "
                "serving refserver's answers costs beyond the bare function and our code counted apart."
            )
    return lines


def markdown(data: dict[str, Any], plot_name: str | None) -> str:
    m = data["machine"]
    o = data["options"]
    s = data["scenarios"]
    lines = [
        f"# refserver benchmark {data['timestamp']}",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['memory_gib']} GiB, {m['kernel']}; "
        f"Python {m['python']}; wrk {m['wrk']}; redis-server {m['redis_server']}. "
        f"Load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
        _code_line(data.get("code", {})),
        "",
        f"Server pinned to CPU {o['server_cpu']}; generator (wrk, Trio clients) and redis-server to CPU "
        f"{o['client_cpu']}, all at nice {o.get('nice', 0)}. One Hypercorn trio worker. "
        f"{o['runs']} run(s), medians shown; "
        f"{o['duration']:g} s per wrk point" + (" (--quick: sizes too small to mean anything)." if o["quick"] else "."),
        "",
        "## Targets",
        "",
        "| target | measured | met | detail |",
        "| --- | --- | --- | --- |",
    ]
    for t in data.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['measured'], 2)} {t['unit']} | {met} | {t['detail']} |")
    lines += [
        "",
        "## Request floods (wrk, one session, `tools/call` echo)",
        "",
        "| scenario | conns | req/s | p50 ms | p99 ms | wrk CPU | server CPU | others on server core | bad |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in PLOT_ORDER:
        for c, point in s.get(name, {}).get("points", {}).items():
            med = point["median"]
            lines.append(
                f"| {SCENARIO_NAMES[name]} | {c} | {_fmt(med['requests_per_s'], 0)} | {_fmt(med['p50_ms'], 2)} | "
                f"{_fmt(med['p99_ms'], 2)} | {_pct(med['generator_cpu'])} | {_pct(med['server_cpu'])} | "
                f"{_pct(med['interference'])} | {med['bad'] + med['errors']} |"
            )
    lines += _ceiling_table(s)
    for flood, where in (("S2", ""), ("S2C", ", the cluster's masters together")):
        lines += _redis_per_request_lines(flood, where, s)
    if "median" in s.get("S3", {}):
        s3 = s["S3"]
        med = s3["median"]
        wrk = next(iter(s3["wrk_alternating_connections"].values()))["median"]
        lines += [
            "",
            "## S3: two instances and Redis",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| c=1, every request to instance A (Trio client), median | {_fmt(med['one_instance_p50_ms'], 2)} ms |",
            f"| c=1, alternating A, B, A, ... (Trio client), median | {_fmt(med['alternating_p50_ms'], 2)} ms |",
            f"| added by crossing instances | {_fmt(med['added_median_ms'], 2)} ms |",
            f"| client CPU | {_pct(med['generator_cpu'])} |",
            f"| wrk c=32, connections alternating instances, req/s (both instances on one core) | "
            f"{_fmt(wrk['requests_per_s'], 0)} (p50 {_fmt(wrk['p50_ms'], 2)} ms, p99 {_fmt(wrk['p99_ms'], 2)} ms) |",
        ]
    for name in ("S4", "S4C"):
        if "rounds" in s.get(name, {}):
            lines += _streams_lines(name, s[name])
    if "rounds" in s.get("S4b", {}):
        lines += _s4b_lines(s["S4b"])
    lines += _in_process_section(s)
    lines += _instructions_section(s)
    if "S5" in s:
        lines += [
            "",
            "## S5: session creation (initialize + initialized + first tools/call)",
            "",
            "`bare`: the same three requests answered by a bare ASGI app on the same worker"
            " (`bench/bare_session_app.py`), the stack's ceiling;"
            " x bare is the median of each repetition's ratio to it.",
            "",
            "| backend | sessions/s | x bare | p50 ms | p99 ms | client CPU | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for backend, section in s["S5"].items():
            med = section["median"]
            lines.append(
                f"| {backend} | {_fmt(med['sessions_per_s'], 0)} | {_fmt(med.get('vs_bare'), 2)} | "
                f"{_fmt(med['p50_ms'], 1)} | {_fmt(med['p99_ms'], 1)} | {_pct(med['generator_cpu'])} | "
                f"{_fmt(med['errors'], 0)} |"
            )
    if "load" in s.get("T1", {}):
        lines += _t1_lines(s["T1"], o)
    if data.get("errors"):
        lines += ["", "## Errors", ""]
        lines += [f"- {e['scenario']}: `{e['error']}` (traceback in the JSON)" for e in data["errors"]]
    for name, profile in data.get("profiles", {}).items():
        summary = profile["summary"]
        lines += [
            "",
            f"## Where {name}'s time goes (py-spy, {summary['samples']} samples; {profile['load']})",
            "",
            f"Raw stacks: `{profile['file']}` (collapsed format: speedscope, flamegraph.pl). "
            f"trio's run loop alone (no task): {_pct(summary['scheduler_only'])}.",
            "",
            "| self time by package | share | | hottest functions (self) | share |",
            "| --- | ---: | --- | --- | ---: |",
        ]
        pkgs, funcs = summary["self_by_package"][:10], summary["self_functions"][:10]
        for i in range(max(len(pkgs), len(funcs))):
            p = pkgs[i] if i < len(pkgs) else ("", None)
            f = funcs[i] if i < len(funcs) else ("", None)
            lines.append(
                f"| {p[0]} | {_pct(p[1]) if p[1] is not None else ''} | | `{f[0]}` | "
                f"{_pct(f[1]) if f[1] is not None else ''} |"
            )
        lines += [
            "",
            "refserver functions, inclusive: "
            + ", ".join(f"`{n}` {share:.0%}" for n, share in summary["inclusive_refserver_functions"][:12]),
        ]
    if plot_name:
        lines += ["", f"![throughput and p99 latency against concurrency]({plot_name})"]
    return "\n".join(lines) + "\n"


def _redis_per_request_lines(flood: str, where: str, s: dict[str, Any]) -> list[str]:
    runs = [r for point in s.get(flood, {}).get("points", {}).values() for r in point["runs"]]
    per_request = [r["redis_calls_per_request"] for r in runs if "redis_calls_per_request" in r]
    if not per_request:
        return []
    commands: dict[str, float] = {}
    for run in runs:
        for name, value in run.get("redis_commands_per_request", {}).items():
            commands[name] = commands.get(name, 0.0) + value / len(runs)
    shown = ", ".join(f"{name} {value:.2f}" for name, value in sorted(commands.items(), key=lambda kv: -kv[1])[:6])
    return [
        "",
        f"Redis commands per {flood} `tools/call` (INFO commandstats over each run{where}): {min(per_request):.2f} to "
        f"{max(per_request):.2f} ({shown}).",
    ]


def _streams_lines(name: str, s4: dict[str, Any]) -> list[str]:
    """S4 or S4C: sessions with a stream each, their memory, Redis connections and the notifier's rounds."""
    lines: list[str] = []
    before, after = s4.get("redis_connections_before"), s4.get("redis_connections_after")
    rounds = [f"{r['spread_s']:.2f} s (median arrival +{r['p50_offset_s']:.2f} s)" for r in s4["rounds"]]
    lines += [
        "",
        f"## {name}: concurrent sessions, each with an open GET stream ({s4.get('backend', 'redis')} backend)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| sessions requested, created, streams opened | {s4['sessions_requested']}, "
        f"{s4.get('sessions_created', '-')}, {s4.get('streams_opened', '-')} "
        f"(server reports {s4['server_reported_sessions']} sessions) |",
        f"| streams open when measured, at the end; dropped by the server | {s4['sessions_ready']}, "
        f"{s4.get('streams_open_at_end', '-')}; {s4.get('streams_dropped', '-')} |",
        f"| first failure; first drop | {s4['first_error'] or '-'}; {s4.get('first_drop') or '-'} |",
        f"| sessions created (initialize, initialized, subscribe) | {_fmt(s4['setup_seconds'], 1)} s "
        f"({_fmt(s4['setup_sessions_per_s'], 0)} sessions/s) |",
        f"| streams opened after all sessions existed | {_fmt(s4['streams_seconds'], 1)} s |",
        f"| worker RSS: before, with the sessions, with their streams | {s4['rss_before_bytes'] / 2**20:.1f}, "
        f"{s4['rss_sessions_bytes'] / 2**20:.1f}, {s4['rss_after_bytes'] / 2**20:.1f} MiB |",
        f"| RSS per session with its stream | {_fmt(s4['rss_per_session_kib'], 1)} KiB "
        f"({_fmt(s4['rss_session_only_kib'], 1)} session + {_fmt(s4['rss_stream_kib'], 1)} stream) |",
    ]
    floor = s4.get("floor")
    if floor:
        lines.append(
            f"| floor: RSS per stream held by a bare ASGI SSE app on the same Hypercorn worker "
            f"(`bench/bare_stream_app.py`, {floor['streams_held']} streams) | "
            f"{_fmt(floor['rss_per_stream_kib'], 1)} KiB |"
        )
        lines += _watched_floor(floor)
    if before is not None and after is not None:
        lines.append(
            f"| Redis connections (refserver / all{', all nodes' if name == 'S4C' else ''}) | "
            f"{before['refserver']} / {before['total']} -> "
            f"{after['refserver']} / {after['total']} |"
        )
    lines += [
        f"| a notification reaches every stream (first to last arrival, median of rounds) | "
        f"{_fmt(s4['notify_all_s'], 2)} s |",
        "| rounds observed | " + (", ".join(rounds) or "none") + " |",
        f"| server CPU while streams idle/notified | {_pct(s4['server_cpu_while_idle_streams'])} |",
    ]
    if s4.get("redis_calls_while_notifying"):
        calls = list(s4["redis_calls_while_notifying"].items())[:6]
        lines.append("| Redis commands while notifying (total) | " + ", ".join(f"{k} {v:,}" for k, v in calls) + " |")
    by_node_before, by_node_after = (
        s4.get("redis_connections_by_node_before"),
        s4.get("redis_connections_by_node_after"),
    )
    if by_node_before and by_node_after:
        lines.append(
            "| Redis connections per cluster node, refserver's (port: before -> with the streams) | "
            + ", ".join(
                f"{node}: {counts['refserver']} -> {by_node_after.get(node, {}).get('refserver', '-')}"
                for node, counts in by_node_before.items()
            )
            + " |"
        )
    return lines


def _t1_lines(t1: dict[str, Any], options: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## T1: durable tasks through {t1['instances']} instances and Redis",
        "",
        f"Each client loop: `tools/call` of `slow_compute` (`seconds: 0`) as a task (2026-07-28 tasks extension), "
        f"then `tasks/get` at once and every {_fmt(t1['poll_interval_ms'], 0)} ms after a non-terminal answer "
        f"until `completed`; every request to the next instance than the last (no stickiness). "
        f"All {t1['instances']} instances on CPU {options['server_cpu']} ({t1['task_workers_per_instance']} task "
        f"workers each), auth {t1['auth']}. Queue = from the task handle's arrival to the answer of the first "
        f"`tasks/get` showing `completed`, so it includes up to one poll interval and round trip; "
        f"server clock = the completed task's `lastUpdatedAt` - `createdAt` (no polling in it, 1 ms resolution). "
        f"Medians of {options['runs']} run(s); errors summed.",
        "",
        "| clients | tasks/s | tasks/s per second (min-max) | created p50 / p99 ms | queue p50 / p99 ms | "
        "queue by server clock p50 / p99 ms | end to end p50 / p99 ms | tasks/get p50 ms | polls/task | "
        "Redis cmds/task | client CPU | servers CPU | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm in ("load", "latency"):
        med = t1[arm]["median"]
        clients = t1[arm]["runs"][0]["clients"] if t1[arm]["runs"] else "-"
        windows = (
            f"{_fmt(med['tasks_per_s_windows_min'], 0)}-{_fmt(med['tasks_per_s_windows_max'], 0)}"
            if "tasks_per_s_windows_min" in med
            else "-"
        )
        lines.append(
            f"| {clients} | {_fmt(med['tasks_per_s'], 0)} | {windows} | {_fmt(med['created_p50_ms'], 2)} / "
            f"{_fmt(med['created_p99_ms'], 2)} | {_fmt(med['queue_p50_ms'], 2)} / {_fmt(med['queue_p99_ms'], 2)} | "
            f"{_fmt(med['stored_p50_ms'], 1)} / {_fmt(med['stored_p99_ms'], 1)} | "
            f"{_fmt(med['end_to_end_p50_ms'], 2)} / {_fmt(med['end_to_end_p99_ms'], 2)} | "
            f"{_fmt(med['tasks_get_p50_ms'], 2)} | "
            f"{_fmt(med['polls_per_task'], 1)} | {_fmt(med['redis_calls_per_task'], 1)} | "
            f"{_pct(med['generator_cpu'])} | {_pct(med['server_cpu'])} | {med['errors']} |"
        )
    load_runs = t1["load"]["runs"]
    if load_runs:
        commands: dict[str, float] = {}
        for run in load_runs:
            for name, value in run.get("redis_commands_per_task", {}).items():
                commands[name] = commands.get(name, 0.0) + value / len(load_runs)
        shown = ", ".join(f"{name} {value:.1f}" for name, value in sorted(commands.items(), key=lambda kv: -kv[1])[:6])
        lines += [
            "",
            f"Redis commands per task (INFO commandstats, all {t1['instances']} instances together, under load): "
            f"{shown}; with no task at all the instances issue {_fmt(t1['redis_idle_calls_per_s'], 0)} commands/s "
            f"and use {_pct(t1.get('servers_idle_cpu'))} of their core. "
            "Tasks/s per run: " + ", ".join(_fmt(r["tasks_per_s"], 0) for r in load_runs) + ".",
        ]
    return lines


def write_plot(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    series = {name: data["scenarios"][name]["points"] for name in PLOT_ORDER if name in data["scenarios"]}
    if not series:
        return False
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, points in series.items():
        cs = [int(c) for c in points]
        ax_rps.plot(cs, [points[c]["median"]["requests_per_s"] for c in points], marker="o", label=SCENARIO_NAMES[name])
        ax_p99.plot(cs, [points[c]["median"]["p99_ms"] for c in points], marker="o", label=name)
    ticks = sorted({int(c) for points in series.values() for c in points})
    for ax, title, unit in ((ax_rps, "Throughput", "requests/s"), (ax_p99, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrent connections (wrk)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_p99.set_yscale("log")
    ax_p99.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax_p99.axhline(40, color="grey", linestyle="--", linewidth=1)
    ax_p99.annotate("40 ms target", (1, 40), textcoords="offset points", xytext=(2, 3), color="grey", fontsize=8)
    ax_rps.set_ylim(bottom=0)
    ax_rps.legend(fontsize=8, loc="best")
    m = data["machine"]
    fig.suptitle(
        f"refserver {data['timestamp']} - {m['cpu_model']}, server on 1 core, medians of {data['options']['runs']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(data: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / data["timestamp"]
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "png": stem.with_suffix(".png")}
    plotted = write_plot(data, paths["png"])
    if not plotted:
        del paths["png"]
    write_json(data, paths["json"])
    paths["md"].write_text(markdown(data, paths["png"].name if plotted else None))
    return paths


def _s4b_lines(s4b: dict[str, Any]) -> list[str]:
    before, after = s4b.get("redis_connections_before"), s4b.get("redis_connections_after")
    rounds = [f"{r['spread_s']:.2f} s (median arrival +{r['p50_offset_s']:.2f} s)" for r in s4b["rounds"]]
    lines = [
        "",
        f"## S4b: concurrent 2026-07-28 `subscriptions/listen` streams ({s4b['backend']} backend)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| streams requested, opened; open when measured, at the end; dropped by the server | "
        f"{s4b['streams_requested']}, {s4b['streams_opened']}; {s4b['streams_ready']}, "
        f"{s4b['streams_open_at_end']}; {s4b['streams_dropped']} |",
        f"| first failure; first drop | {s4b['first_error'] or '-'}; {s4b['first_drop'] or '-'} |",
        f"| streams opened (listen request to acknowledgement) | {_fmt(s4b['open_seconds'], 1)} s "
        f"({_fmt(s4b['open_streams_per_s'], 0)} streams/s) |",
        f"| worker RSS: before, with the streams | {s4b['rss_before_bytes'] / 2**20:.1f}, "
        f"{s4b['rss_after_bytes'] / 2**20:.1f} MiB |",
        f"| RSS per listen stream | {_fmt(s4b['rss_per_stream_kib'], 1)} KiB |",
    ]
    floor = s4b.get("floor")
    if floor:
        lines.append(
            f"| floor: RSS per stream held by a bare ASGI SSE app on the same Hypercorn worker "
            f"(`bench/bare_stream_app.py`, {floor['streams_held']} streams) | "
            f"{_fmt(floor['rss_per_stream_kib'], 1)} KiB |"
        )
        lines += _watched_floor(floor)
    if before is not None and after is not None:
        lines.append(
            f"| Redis connections (refserver / all) | {before['refserver']} / {before['total']} -> "
            f"{after['refserver']} / {after['total']} |"
        )
    lines += [
        f"| a notification reaches every stream (first to last arrival, median of rounds) | "
        f"{_fmt(s4b['notify_all_s'], 2)} s |",
        "| rounds observed | " + (", ".join(rounds) or "none") + " |",
    ]
    return lines


def _watched_floor(floor: dict[str, Any]) -> list[str]:
    watched = floor.get("watched")
    if not watched:
        return []
    return [
        f"| floor with a disconnect watcher: the same app's `/watched` streams (a nursery, a task waiting for "
        f"`http.disconnect`, the sender waiting on an event under a heartbeat timeout; {watched['streams_held']} "
        f"streams) | {_fmt(watched['rss_per_stream_kib'], 1)} KiB |"
    ]
