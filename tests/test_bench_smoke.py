"""The load benchmark harness (bench/) must keep working: a `--quick` run of every scenario, end to end.

Nothing here looks at a timing: tiny sizes on a shared machine measure nothing. What is checked is that
every scenario ran, produced its numbers, and that the result files (JSON, Markdown, PNG) were written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import profiling
from bench.options import ALL_SCENARIOS, FLOOD_SCENARIOS
from bench.streams import rounds_from_arrivals
from bench.targets import evaluate

ROOT = Path(__file__).resolve().parent.parent
QUICK_RUN_TIMEOUT = 420.0
"""Seconds for the whole quick run (about 90 s alone; servers start slowly on a loaded machine, S4, S4b and the two
stream floors each start a fresh server, and IR starts four processes under valgrind)."""


def _missing_tools() -> list[str]:
    missing = [tool for tool in ("wrk", "redis-server", "taskset", "valgrind") if shutil.which(tool) is None]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing.append("matplotlib (pip install -e '.[bench]')")
    return missing


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    missing = _missing_tools()
    if missing:
        pytest.skip(f"the benchmark needs {', '.join(missing)} (apt-get install wrk; pip install -e '.[bench]')")
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        # --nice 0: no timing is asserted, so the smoke run must not take the CPU from anything else.
        [sys.executable, "-m", "bench", "--quick", "--nice", "0", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"bench --quick failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    reports = sorted(out.glob("*.json"))
    assert len(reports) == 1, list(out.iterdir())
    return json.loads(reports[0].read_text()), reports[0]


def test_quick_run_writes_json_markdown_and_plot(quick_run: tuple[dict, Path]) -> None:
    data, json_path = quick_run
    markdown = json_path.with_suffix(".md").read_text()
    assert json_path.with_suffix(".png").stat().st_size > 10_000
    assert f"![throughput and p99 latency against concurrency]({json_path.stem}.png)" in markdown
    for heading in (
        "## Targets",
        "## Request floods",
        "## S3",
        "## S4:",
        "## S4C:",
        "## S4b",
        "## S5",
        "## T1",
        "## IR",
    ):
        assert heading in markdown
    assert data["machine"]["cpu_count"] and data["machine"]["wrk"]
    assert data["options"]["quick"] is True


def test_quick_run_measured_every_scenario(quick_run: tuple[dict, Path]) -> None:
    data, _ = quick_run
    scenarios = data["scenarios"]
    assert set(ALL_SCENARIOS) <= set(scenarios)
    for name in FLOOD_SCENARIOS:
        for concurrency, point in scenarios[name]["points"].items():
            (run,) = point["runs"]
            assert run["connections"] == int(concurrency)
            assert run["requests"] > 0 and run["ok"] == run["requests"], (name, concurrency, run)
            assert run["bad"] == 0 and not any(run["errors"].values()), (name, concurrency, run)
            assert run["generator_cpu"] > 0 and run["server_cpu"] is not None
    s3 = scenarios["S3"]
    assert s3["runs"][0]["alternating"]["requests"] > 0 and s3["runs"][0]["one_instance"]["requests"] > 0
    assert next(iter(s3["wrk_alternating_connections"].values()))["runs"][0]["bad"] == 0
    for name in ("S4", "S4C"):
        s4 = scenarios[name]
        assert s4["sessions_ready"] == s4["sessions_requested"] and s4["sessions_failed"] == 0, name
        assert s4["rss_after_bytes"] > 0 and s4["redis_connections_after"]["refserver"] > 0, name
        assert s4["rounds"], f"{name}: no notification round reached every stream"
    # The cluster's masters serve refserver's connections (replicas none: nothing reads from them).
    masters = {str(port) for port in data["redis_cluster"]["masters"]}
    by_node = scenarios["S4C"]["redis_connections_by_node_after"]
    assert len(by_node) == 6 and all(by_node[port]["refserver"] > 0 for port in masters), by_node
    s4b = scenarios["S4b"]
    assert s4b["streams_ready"] == s4b["streams_requested"] and s4b["streams_failed"] == 0, s4b["first_error"]
    assert s4b["streams_dropped"] == 0, s4b["first_drop"]
    assert s4b["rss_after_bytes"] > 0 and s4b["redis_connections_after"]["refserver"] > 0
    assert s4b["rounds"], "no notification round reached every listen stream"
    assert s4b["floor"]["streams_held"] == s4b["streams_requested"]
    for backend in ("memory", "redis", "bare"):
        run = scenarios["S5"][backend]["runs"][0]
        assert run["sessions"] > 0 and run["errors"] == 0
    assert all(scenarios["IP"]["median"][shape] > 0 for shape in ("S1", "M1"))
    counts = scenarios["IR"]["instructions_per_request"]
    assert set(counts) >= {"S0A", "PJ", "S1", "M1", "IP S1", "IP M1"}, counts
    # Counts, not times: refserver's server runs the bare stack's work and its own application's on top of it.
    assert counts["S1"] > counts["S0A"] and counts["S1"] > counts["IP S1"] > 0, counts
    assert scenarios["S5"]["memory"]["runs"][0]["vs_bare"] > 0
    for arm in ("load", "latency"):
        run = scenarios["T1"][arm]["runs"][0]
        assert run["tasks"] > 0 and run["errors"] == 0, (arm, run["first_errors"])
        assert all(served > 0 for served in run["requests_by_instance"]), run["requests_by_instance"]


def test_quick_run_evaluates_every_target(quick_run: tuple[dict, Path]) -> None:
    data, _ = quick_run
    targets = {t["id"]: t for t in data["targets"]}
    expected = {
        "S1/S0",
        "S1T/S1",
        "S1/P",
        "S1/PJ",
        "S1/PJA",
        "M1/PJ",
        "M1/PJA",
        "S1 p99",
        "M1 p99",
        "S2/S1",
        "S2C/S2",
        "S3",
        "S4 RSS",
        "S4 Redis",
        "S4 notify",
        "S4C notify",
        "S4C Redis",
        "S4b RSS",
        "S4b Redis",
        "S4b notify",
        "S5",
        "S5 Redis",
    }
    assert set(targets) == expected
    assert all(t["met"] is not None for t in targets.values()), targets
    assert evaluate(data) == data["targets"]


def test_rounds_are_split_on_quiet_gaps_and_partial_rounds_dropped() -> None:
    arrivals = [(0.0, 1), (0.1, 2), (5.0, 0), (5.2, 1), (5.3, 2), (10.0, 2), (10.1, 0), (10.5, 1)]
    rounds = rounds_from_arrivals(arrivals, expected=3, gap=2.0)
    assert [round(r["spread_s"], 3) for r in rounds] == [0.3, 0.5]
    assert all(r["arrivals"] == 3 for r in rounds)


def test_profile_summary_attributes_samples_below_the_scheduler(tmp_path: Path) -> None:
    root = "<module> (<string>:1);trio_worker (hypercorn/trio/run.py:124);unrolled_run (trio/_core/_run.py:2712)"
    collapsed = tmp_path / "stacks.txt"
    collapsed.write_text(
        f"{root};post_mcp (refserver/transport/streamable_http.py:100);loads (json/__init__.py:299) 3\n"
        f"{root};handle (h11/_connection.py:10) 1\n"
        f"{root} 1\n"
    )
    summary = profiling.summarize(collapsed)
    assert summary["samples"] == 5
    assert summary["scheduler_only"] == pytest.approx(0.2)
    assert dict(summary["self_by_package"]) == pytest.approx({"json": 0.6, "h11": 0.2, "trio": 0.2})
    assert dict(summary["inclusive_refserver_functions"]) == pytest.approx(
        {"post_mcp (refserver/transport/streamable_http.py)": 0.6}
    )
