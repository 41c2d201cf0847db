"""`python -m bench`: start what the scenarios need, measure them, write bench/results/<timestamp>.{json,md,png}.

Examples: `python -m bench` (everything, 3 runs, about 12 minutes on 2 cores); `python -m bench --quick`
(every scenario at tiny sizes: the smoke test, under a minute); `python -m bench --scenarios S1,P --runs 1`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from bench.options import ALL_SCENARIOS, Options, default_cpus, default_nice
from bench.report import write_all
from bench.runner import make_progress, run_benchmark
from bench.targets import evaluate


def parse_args(argv: list[str]) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    parser.add_argument(
        "--scenarios", default=",".join(ALL_SCENARIOS), help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}"
    )
    parser.add_argument("--runs", type=int, help="repetitions of every measurement; medians are reported (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="results directory")
    parser.add_argument("--duration", type=float, help="seconds per wrk measurement (default 6)")
    parser.add_argument("--sessions", type=int, help="S4: concurrent sessions with a stream (default 10000)")
    parser.add_argument("--s4-backend", choices=("redis", "memory"), help="S4's backend (default redis)")
    parser.add_argument("--listeners", type=int, help="S4b: concurrent listen streams (default 10000)")
    parser.add_argument("--s4b-backend", choices=("redis", "memory"), help="S4b's backend (default redis)")
    parser.add_argument("--server-cpu", type=int, help="core for the servers (default: the first usable core)")
    parser.add_argument("--client-cpu", type=int, help="core for wrk, the Trio clients and Redis (default: second)")
    parser.add_argument(
        "--nice", type=int, help="niceness of the bench and all it starts (default -15 as root, else 0)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles (S1, S2, S5)")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="measure nothing: rewrite the .md and .png of a results JSON"
    )
    args = parser.parse_args(argv)

    canonical = {name.upper(): name for name in ALL_SCENARIOS}  # names are case-insensitive (s4b is S4b)
    scenarios = tuple(canonical.get(s.strip().upper(), s.strip()) for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in ALL_SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(ALL_SCENARIOS)}")
    values: dict[str, object] = Options.quick_defaults() if args.quick else {}
    server_cpu, client_cpu = default_cpus()
    values.update(scenarios=scenarios, out=args.out, server_cpu=server_cpu, client_cpu=client_cpu, nice=default_nice())
    for name, value in (
        ("runs", args.runs),
        ("duration", args.duration),
        ("s4_sessions", args.sessions),
        ("s4_backend", args.s4_backend),
        ("s4b_streams", args.listeners),
        ("s4b_backend", args.s4b_backend),
        ("server_cpu", args.server_cpu),
        ("client_cpu", args.client_cpu),
        ("nice", args.nice),
    ):
        if value is not None:
            values[name] = value
    if args.no_profile:
        values["profile"] = False
    return Options(**values), args.report  # type: ignore[arg-type]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the runner's cleanup: every started process is stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    options, report = parse_args(sys.argv[1:] if argv is None else argv)
    progress = make_progress()
    if report is not None:
        data = json.loads(report.read_text())
        data["targets"] = evaluate(data)
        for kind, path in write_all(data, report.parent).items():
            progress(f"wrote {path} ({kind})")
        return 0
    progress(
        f"bench: scenarios {','.join(options.scenarios)}, {options.runs} run(s), concurrencies "
        f"{list(options.concurrencies)}, server on CPU {options.server_cpu}, generator on CPU {options.client_cpu}, "
        f"nice {options.nice}"
    )
    if options.server_cpu is None:
        progress("warning: fewer than 2 usable cores: server and generator share the CPU, numbers are not comparable")
    data = run_benchmark(options, progress)
    data["targets"] = evaluate(data)
    paths = write_all(data, options.out)
    progress("targets:")
    for target in data["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        measured = target["measured"]
        shown = f"{measured:.2f}" if isinstance(measured, float) else str(measured)
        progress(f"  {verdict:<12} {target['target']}: {shown} {target['unit']} {target['detail']}")
    for kind, path in paths.items():
        progress(f"wrote {path} ({kind})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
