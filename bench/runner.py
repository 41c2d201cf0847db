"""One benchmark run: start what the scenarios need, measure, stop everything, return the raw numbers.

Phase 1 keeps every server of the flood scenarios up at once (all pinned to the server core, idle
unless measured) so S0, S1, S2, S2C, P and PJ are measured in the same run, interleaved per concurrency; S3
and S5 reuse those servers. Phase 2 (S4, then S4C) runs alone on a fresh instance each, so its RSS baseline is
clean. The single Redis and the Redis Cluster (S2C, S4C: three masters and three replicas) both live through the
whole run, on the generator's core.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import attrs
import trio

from bench import instructions, profiling
from bench import redis_cluster as formation
from bench.cross import run_cross_instance
from bench.durable_tasks import run_tasks
from bench.listen_streams import run_listen_streams, warm_listener
from bench.machine import code_version, load_average, machine_info
from bench.mcpclient import new_session, obtain_token
from bench.options import FLOOD_SCENARIOS, RATIO_CONCURRENCY, Options
from bench.otlp_sink import OtlpSink
from bench.procs import (
    ROOT,
    Proc,
    cpu_seconds,
    free_port,
    hypercorn_server,
    is_redis,
    pinned,
    raise_priority,
    redis_server,
    refserver_env,
    sdk_peer_server,
    start_all,
    stop_all,
    wait_redis,
)
from bench.redisstats import calls_between, command_calls
from bench.setup_rate import run_setup_rate
from bench.stream_floor import run_floor_streams
from bench.streams import FD_HEADROOM, raise_fd_limit, run_streams
from bench.wrkrun import Target, WrkResult, describe, ensure_wrk, median_result, run_wrk, wrk_version

Progress = Callable[[str], None]
S4_IDLE_TTL = 3600
T1_INSTANCES = 3
T1_TASK_WORKERS = 32
"""REFSERVER_TASK_WORKERS of each T1 instance (refserver's default, set so that the results say it)."""
T1_TASK_LIMIT = 100_000
"""REFSERVER_TASKS_PER_SUBJECT and REFSERVER_TASK_QUEUE_LIMIT for T1: every client is the one bench user."""
T1_IDLE_SECONDS = 1.0
"""Seconds T1's Redis commands are counted with nothing to do (heartbeats, workers waiting on the queue)."""
CLUSTER_NODE_TIMEOUT_MS = 5000
"""cluster-node-timeout of the benchmark's cluster: no node is killed here, and six nodes share the generator's core
with wrk and the Trio clients, so a node busy for a second under load must not be failed over (the tests' 1 s would
risk it)."""
CLUSTER_DESCRIPTION = "Redis Cluster, 3 masters + 3 replicas"


def make_progress() -> Progress:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    return progress


def timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


class Runner:
    def __init__(self, options: Options, stamp: str, progress: Progress) -> None:
        self.options = options
        self.stamp = stamp
        self.progress = progress
        self.log_dir = options.out / f"{stamp}-logs"
        self.procs: list[Proc] = []
        self.servers: dict[str, Proc] = {}
        self.data: dict[str, Any] = {"scenarios": {}}
        self.otlp_sink: OtlpSink | None = None
        self.redis_port = 0
        self.cluster_ports: list[int] = []
        self.cluster_masters: list[int] = []

    def wants(self, *names: str) -> bool:
        return any(name in self.options.scenarios for name in names)

    # --- processes ----------------------------------------------------------------------------

    def _launch(self, procs: list[Proc]) -> None:
        self.procs.extend(procs)
        start_all(procs)
        for proc in procs:
            self.progress(f"started {proc.name} (pid {proc.pid}, log {proc.log_path})")

    def _stop(self, procs: list[Proc]) -> None:
        stop_all(procs)
        for proc in procs:
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_everything(self) -> None:
        servers = [p for p in self.procs if not is_redis(p)]
        self._stop(servers)  # the servers first: they talk to Redis on their way out
        self._stop(list(self.procs))

    # --- measuring ------------------------------------------------------------------------------

    def measure(self, target: Target, connections: int, label: str, threads: int | None = None) -> dict[str, Any]:
        """One wrk run, repeated while the server core was too disturbed by other processes."""
        attempts: list[tuple[float, WrkResult]] = []
        redis_per_request: dict[str, Any] = {}
        for attempt in range(self.options.retries + 1):
            calls_before = command_calls(target.redis_ports) if target.redis_ports else None
            result = run_wrk(target, connections, self.options.duration, cpu=self.options.client_cpu, threads=threads)
            if target.redis_ports and calls_before is not None and attempt == 0:
                calls = calls_between(calls_before, command_calls(target.redis_ports))
                redis_per_request = {
                    "redis_calls_per_request": sum(calls.values()) / max(1, result.requests),
                    "redis_commands_per_request": {k: v / max(1, result.requests) for k, v in calls.items()},
                }
            interference = self._interference(result)
            attempts.append((interference, result))
            note = f"  others on server core {interference:4.0%}" if interference > 0.02 else ""
            retry = " (too disturbed: again)" if interference > self.options.max_interference else ""
            retry = retry if attempt < self.options.retries else ""
            self.progress(f"{label} c={connections:<3} {describe(result)}{note}{retry}")
            if interference <= self.options.max_interference:
                break
        interference, best = min(attempts, key=lambda pair: pair[0])
        return {**best.as_dict(), "interference": interference, "attempts": len(attempts), **redis_per_request}

    def _interference(self, result: WrkResult) -> float:
        core = self.options.server_cpu
        if core is None or core not in result.core_busy or result.server_cpu is None:
            return 0.0
        return max(0.0, result.core_busy[core] - result.server_cpu)

    # --- phase 1: S0, S1, S2, P, S3, S5 ---------------------------------------------------------------

    def phase_one(self) -> None:
        opts = self.options
        cpu = opts.server_cpu
        redis_needed = (
            self.wants("S2", "S3", "S5", "T1")
            or (self.wants("S4") and opts.s4_backend == "redis")
            or (self.wants("S4b") and opts.s4b_backend == "redis")
        )
        self.redis_port = free_port()
        if redis_needed:
            redis = redis_server(self.redis_port, opts.client_cpu, self.log_dir)
            self._launch([redis])
            wait_redis(self.redis_port)
        if self.wants("S2C", "S4C"):
            self.start_redis_cluster()
        servers: dict[str, Proc] = {}
        ports: dict[str, int] = {}
        if self.wants("S0"):
            ports["S0"] = free_port()
            servers["S0"] = hypercorn_server(
                "S0-bare", "bench.bare_app:app", ports["S0"], dict(os.environ), cpu, self.log_dir
            )
        if self.wants("S0A"):
            ports["S0A"] = free_port()
            servers["S0A"] = hypercorn_server(
                "S0A-bare-asgi", "bench.bare_asgi_app:app", ports["S0A"], dict(os.environ), cpu, self.log_dir
            )
        if self.wants("S1", "M1", "S5", "PJA"):
            ports["S1"] = free_port()
            servers["S1"] = hypercorn_server(
                "S1-memory", "refserver.app:app", ports["S1"], refserver_env(ports["S1"]), cpu, self.log_dir
            )
        if self.wants("S1T"):
            # S1 with tracing on: every span built, batched and exported over OTLP/HTTP to a sink that only counts.
            self.otlp_sink = OtlpSink()
            ports["S1T"] = free_port()
            env = refserver_env(ports["S1T"])
            env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=self.otlp_sink.endpoint)
            servers["S1T"] = hypercorn_server(
                "S1T-memory-traced", "refserver.app:app", ports["S1T"], env, cpu, self.log_dir
            )
        if self.wants("S5"):
            # S5's ceiling: the same three requests per session answered by a bare ASGI app on the same worker.
            ports["S5B"] = free_port()
            servers["S5B"] = hypercorn_server(
                "S5-bare", "bench.bare_session_app:app", ports["S5B"], dict(os.environ), cpu, self.log_dir
            )
        if self.wants("S2", "S3", "S5"):
            ports["S2"] = free_port()
            env = refserver_env(ports["S2"], redis_url=self._redis_url(), allowed_hosts="127.0.0.1")
            servers["S2"] = hypercorn_server("S2-redis-A", "refserver.app:app", ports["S2"], env, cpu, self.log_dir)
        if self.wants("S2C"):
            ports["S2C"] = free_port()
            env = refserver_env(
                ports["S2C"], redis_url=self._cluster_url(), redis_cluster=True, allowed_hosts="127.0.0.1"
            )
            servers["S2C"] = hypercorn_server(
                "S2C-redis-cluster", "refserver.app:app", ports["S2C"], env, cpu, self.log_dir
            )
        if self.wants("S3"):
            ports["S3B"] = free_port()
            env = refserver_env(
                ports["S3B"], base_port=ports["S2"], redis_url=self._redis_url(), allowed_hosts="127.0.0.1"
            )
            servers["S3B"] = hypercorn_server("S3-redis-B", "refserver.app:app", ports["S3B"], env, cpu, self.log_dir)
        if self.wants("P"):
            ports["P"] = free_port()
            servers["P"] = sdk_peer_server("P-sdk-uvicorn", ports["P"], cpu, self.log_dir)
        if self.wants("PJ"):
            ports["PJ"] = free_port()
            servers["PJ"] = sdk_peer_server("PJ-sdk-uvicorn-json", ports["PJ"], cpu, self.log_dir, json_response=True)
        if self.wants("PJA"):
            # The SDK behind its own bearer middleware, verifying the S1 server's JWTs: the peer with auth.
            ports["PJA"] = free_port()
            servers["PJA"] = sdk_peer_server(
                "PJA-sdk-uvicorn-json-auth",
                ports["PJA"],
                cpu,
                self.log_dir,
                json_response=True,
                auth_server=f"http://127.0.0.1:{ports['S1']}",
            )
        self.servers = servers
        if servers:
            self.progress(f"starting {', '.join(p.name for p in servers.values())}")
        self._launch(list(servers.values()))

        tokens: dict[str, str] = {}
        targets: dict[str, Target] = {}
        if "S0" in servers:
            targets["S0"] = Target("S0", ports["S0"], path="/", server_pid=servers["S0"].pid)
        if "S0A" in servers:
            targets["S0A"] = Target("S0A", ports["S0A"], path="/", server_pid=servers["S0A"].pid)
        redis_ports = {"S2": (self.redis_port,), "S2C": tuple(self.cluster_masters)}
        for name in ("S1", "S1T", "S2", "S2C"):
            if name in servers:
                tokens[name] = trio.run(obtain_token, ports[name])
                session = trio.run(new_session, ports[name], tokens[name])
                targets[name] = Target(
                    name,
                    ports[name],
                    token=tokens[name],
                    session=session,
                    server_pid=servers[name].pid,
                    redis_ports=redis_ports.get(name, ()),
                )
                self.progress(f"{name}: token by the OAuth flow, session {session[:8]}...")
        if self.wants("M1") and "S1" in servers:
            if "S1" not in tokens:
                tokens["S1"] = trio.run(obtain_token, ports["S1"])
            # The S1 server, with its token: the two eras measured on one process, the same features and auth.
            targets["M1"] = Target("M1", ports["S1"], token=tokens["S1"], server_pid=servers["S1"].pid, modern=True)
        for name in ("P", "PJ"):
            if name in servers:
                session = trio.run(new_session, ports[name], "")
                targets[name] = Target(name, ports[name], session=session, server_pid=servers[name].pid)
        if "PJA" in servers:
            if "S1" not in tokens:
                tokens["S1"] = trio.run(obtain_token, ports["S1"])
            session = trio.run(new_session, ports["PJA"], tokens["S1"])
            targets["PJA"] = Target(
                "PJA", ports["PJA"], token=tokens["S1"], session=session, server_pid=servers["PJA"].pid
            )

        floods = [targets[n] for n in FLOOD_SCENARIOS if n in targets and self.wants(n)]
        self.guarded("floods", lambda: self.flood(floods))
        if self.wants("S3"):
            self.guarded("S3", lambda: self.cross_instance(ports["S2"], ports["S3B"], tokens["S2"]))
        if self.wants("S5"):
            arms = [
                ("memory", ports["S1"], tokens["S1"]),
                ("redis", ports["S2"], tokens["S2"]),
                ("bare", ports["S5B"], ""),
            ]
            self.guarded("S5", lambda: self.setup_rates(arms))
        if self.wants("IP"):
            self.guarded("IP", self.in_process)
        if self.wants("IR"):
            self.guarded("IR", self.instructions)
        if opts.profile:
            self.guarded(
                "profiles",
                lambda: self.profile(
                    [targets[n] for n in ("S1", "S2") if n in targets and self.wants(n)],
                    ports.get("S1") if self.wants("S5") else None,
                    tokens.get("S1", ""),
                ),
            )
        self._stop([p for p in self.procs if not is_redis(p)])
        if self.otlp_sink is not None:
            self.data["otlp_sink"] = {"requests": self.otlp_sink.requests, "bytes": self.otlp_sink.bytes}
            self.otlp_sink.close()

    def guarded(self, name: str, step: Callable[[], None]) -> None:
        """Run one scenario; if it breaks, say so, record it and go on with the others."""
        try:
            step()
        except Exception as exc:
            self.progress(f"{name} FAILED: {exc!r} (recorded; going on)")
            self.data.setdefault("errors", []).append(
                {"scenario": name, "error": repr(exc), "traceback": traceback.format_exc()}
            )

    def _redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _cluster_url(self) -> str:
        """Any node: the cluster client discovers the rest."""
        return f"redis://127.0.0.1:{self.cluster_ports[0]}/0"

    def start_redis_cluster(self) -> None:
        """Six redis-server nodes on the generator's core, joined into three masters and three replicas."""
        ports = [free_port() for _ in range(formation.NODES)]
        nodes = []
        for port in ports:
            # One per node: each keeps its own files. Absolute: redis-server reads its cluster config file after
            # changing to its --dir.
            directory = (self.log_dir / f"redis-cluster-{port}").resolve()
            directory.mkdir(parents=True, exist_ok=True)
            options = formation.node_options(directory / "nodes.conf", free_port(), CLUSTER_NODE_TIMEOUT_MS)
            nodes.append(
                redis_server(
                    port, self.options.client_cpu, directory, name=f"redis-cluster-{port}", extra_options=options
                )
            )
        self._launch(nodes)
        for port in ports:
            wait_redis(port)
        formation.create(ports)
        self.cluster_ports = ports
        self.cluster_masters = formation.masters(ports)
        self.data["redis_cluster"] = {"nodes": ports, "masters": self.cluster_masters}
        self.progress(f"Redis Cluster formed: masters {self.cluster_masters}, all nodes {ports}")

    def flood(self, targets: list[Target]) -> None:
        if not targets:
            return
        opts = self.options
        if opts.warmup > 0:
            for target in targets:
                run_wrk(target, 8, opts.warmup, cpu=opts.client_cpu)
            self.progress(f"warmed up {', '.join(t.name for t in targets)}")
        points: dict[str, dict[int, list[dict[str, Any]]]] = {t.name: {} for t in targets}
        for run in range(opts.runs):
            for connections in opts.concurrencies:
                for target in targets:
                    label = f"[run {run + 1}/{opts.runs}] {target.name:<2}"
                    points[target.name].setdefault(connections, []).append(self.measure(target, connections, label))
        for name, by_c in points.items():
            self.data["scenarios"][name] = {
                "points": {str(c): {"runs": runs, "median": _median_of_dicts(runs)} for c, runs in sorted(by_c.items())}
            }

    def cross_instance(self, port_a: int, port_b: int, token: str) -> None:
        opts = self.options
        session = trio.run(new_session, port_a, token)
        runs = []
        for run in range(opts.runs):
            result = trio.run(
                lambda: run_cross_instance(
                    ports=(port_a, port_b), token=token, session_id=session, duration=opts.s3_duration
                )
            )
            runs.append(result)
            self.progress(
                f"[run {run + 1}/{opts.runs}] S3 c=1  one instance p50 {result['one_instance']['p50_ms']:.2f} ms, "
                f"alternating p50 {result['alternating']['p50_ms']:.2f} ms: +{result['added_median_ms']:.2f} ms "
                f"(client CPU {result['generator_cpu']:.0%})"
            )
        target = Target(
            "S3", port_a, token=token, session=session, extra_ports=(port_b,), redis_ports=(self.redis_port,)
        )
        wrk_runs = []
        for run in range(opts.runs):
            label = f"[run {run + 1}/{opts.runs}] S3 alternating connections"
            wrk_runs.append(self.measure(target, RATIO_CONCURRENCY, label, threads=2))
        self.data["scenarios"]["S3"] = {
            "runs": runs,
            "median": {
                "one_instance_p50_ms": median(r["one_instance"]["p50_ms"] for r in runs),
                "alternating_p50_ms": median(r["alternating"]["p50_ms"] for r in runs),
                "added_median_ms": median(r["added_median_ms"] for r in runs),
                "generator_cpu": median(r["generator_cpu"] for r in runs),
            },
            "wrk_alternating_connections": {
                str(RATIO_CONCURRENCY): {"runs": wrk_runs, "median": _median_of_dicts(wrk_runs)}
            },
        }

    def setup_rates(self, arms: list[tuple[str, int, str]]) -> None:
        """S5 on each `(backend, port, token)` arm, interleaved per repetition (so the ratios to the bare arm come
        from the same conditions); `vs_bare` is each arm's rate over the bare app's in the same repetition."""
        opts = self.options
        runs: dict[str, list[dict[str, Any]]] = {backend: [] for backend, _, _ in arms}
        for run in range(opts.runs):
            for backend, port, token in arms:
                setup = functools.partial(
                    run_setup_rate, port=port, token=token, workers=opts.s5_workers, duration=opts.s5_duration
                )
                result = trio.run(setup)
                runs[backend].append(result)
                self.progress(
                    f"[run {run + 1}/{opts.runs}] S5 {backend:<6} {result['sessions_per_s']:6.0f} sessions/s  "
                    f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  errors {result['errors']}  "
                    f"client CPU {result['generator_cpu']:.0%}"
                )
        section = self.data["scenarios"].setdefault("S5", {})
        bare = runs.get("bare")
        for backend, backend_runs in runs.items():
            if bare and backend != "bare":
                for result, ceiling in zip(backend_runs, bare, strict=True):
                    rate = ceiling["sessions_per_s"]
                    result["vs_bare"] = result["sessions_per_s"] / rate if rate else float("nan")
            keys = ["sessions_per_s", "p50_ms", "p99_ms", "generator_cpu", "errors"]
            keys += ["vs_bare"] if backend_runs and "vs_bare" in backend_runs[0] else []
            section[backend] = {
                "runs": backend_runs,
                "median": {key: median(r[key] for r in backend_runs) for key in keys},
            }

    def in_process(self) -> None:
        """IP: refserver's own cost per echo, the application called in-process (bench/inprocess.py), alone on the
        server core (the flood servers are idle meanwhile)."""
        opts = self.options
        command = [sys.executable, "-m", "bench.inprocess", "--requests", str(opts.ip_requests)]
        command += ["--batches", str(opts.ip_batches)]
        runs = []
        for run in range(opts.runs):
            log = (self.log_dir / "IP.log").open("ab")
            process = subprocess.Popen(
                pinned(command, opts.server_cpu), cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
            raise_priority(process.pid, opts.nice)
            output, _ = process.communicate(timeout=600)
            log.close()
            if process.returncode != 0:
                raise RuntimeError(f"bench.inprocess failed ({process.returncode}); see {self.log_dir / 'IP.log'}")
            result = json.loads(output.decode().strip().splitlines()[-1])
            runs.append(result)
            self.progress(
                f"[run {run + 1}/{opts.runs}] IP in-process cost per echo: S1 {result['S1']['us_per_request']:.0f} us, "
                f"M1 {result['M1']['us_per_request']:.0f} us"
            )
        self.data["scenarios"]["IP"] = {
            "runs": runs,
            "median": {shape: median(r[shape]["us_per_request"] for r in runs) for shape in ("S1", "M1")},
        }

    def instructions(self) -> None:
        """IR: instructions per request under callgrind (bench/instructions.py), S0A, PJ, S1, M1 and in-process."""
        if instructions.valgrind() is None:
            raise RuntimeError("valgrind is not installed (apt-get install valgrind): no instruction counts")
        opts = self.options
        ports = {name: free_port() for name in ("S0A", "PJ", "S1")}
        procs = instructions.server_procs(self.log_dir, ports, opts.server_cpu)
        self.progress(f"IR: starting {', '.join(p.name for p in procs.values())} (slow under valgrind)")
        self._launch(list(procs.values()))
        try:
            counts = trio.run(instructions.count_servers, procs, ports, self.log_dir, opts.ir_requests)
        finally:
            self._stop(list(procs.values()))
        counts.update(
            instructions.count_in_process(self.log_dir, opts.ir_requests, opts.server_cpu, self.log_dir / "IR-IP.log")
        )
        self.data["scenarios"]["IR"] = {"requests": opts.ir_requests, "instructions_per_request": counts}
        self.progress(
            "IR instructions per request: " + ", ".join(f"{name} {count / 1e6:.2f} M" for name, count in counts.items())
        )

    def profile(self, targets: list[Target], s5_port: int | None, s5_token: str) -> None:
        """py-spy on the worker during an extra (unreported) load: S1 and S2 floods at c=32, S5 set-ups."""
        if profiling.py_spy() is None:
            self.progress("py-spy not installed: no profile (pip install -e '.[bench]')")
            return
        seconds = self.options.profile_seconds
        for target in targets:
            assert target.server_pid is not None

            def flood(target: Target = target) -> str:
                result = run_wrk(target, RATIO_CONCURRENCY, seconds, cpu=self.options.client_cpu)
                return f"wrk c={RATIO_CONCURRENCY}: {result.requests_per_s:.0f} req/s while sampled"

            self._profile_one(target.name, target.server_pid, flood)
        if s5_port is not None and "S1" in self.servers:

            def sessions() -> str:
                port, workers = s5_port, self.options.s5_workers
                result = trio.run(lambda: run_setup_rate(port=port, token=s5_token, workers=workers, duration=seconds))
                return f"S5 memory, {workers} clients: {result['sessions_per_s']:.0f} sessions/s while sampled"

            self._profile_one("S5", self.servers["S1"].pid, sessions)

    def _profile_one(self, name: str, pid: int, load: Callable[[], str]) -> None:
        output = self.options.out / f"{self.stamp}-profile-{name}.collapsed.txt"
        recorder = profiling.start_recording(pid, self.options.profile_seconds, output)
        time.sleep(0.5)  # py-spy attaches
        load_note = load()
        _, errors = recorder.communicate(timeout=60)
        if recorder.returncode != 0 or not output.exists():
            self.progress(f"py-spy failed on {name}: {errors.decode(errors='replace')[-300:]}")
            return
        summary = profiling.summarize(output)
        self.data.setdefault("profiles", {})[name] = {"file": output.name, "load": load_note, "summary": summary}
        top = ", ".join(f"{pkg} {share:.0%}" for pkg, share in summary["self_by_package"][:5])
        self.progress(f"profiled {name} ({load_note}): self time by package: {top}")

    # --- T1: durable tasks ------------------------------------------------------------------------------

    def durable_tasks(self) -> None:
        """Three instances (conformance features, Redis backend, embedded auth) alone on the server core."""
        if not self.wants("T1"):
            return
        opts = self.options
        ports = [free_port() for _ in range(T1_INSTANCES)]
        settings: dict[str, Any] = {
            "redis_url": self._redis_url(),
            "allowed_hosts": "127.0.0.1",
            "features": "reference,conformance",
            "task_workers": T1_TASK_WORKERS,
            "tasks_per_subject": T1_TASK_LIMIT,
            "task_queue_limit": T1_TASK_LIMIT,
        }
        servers = [
            hypercorn_server(
                f"T1-redis-{'ABC'[index]}",
                "refserver.app:app",
                port,
                refserver_env(port, base_port=ports[0], **settings),
                opts.server_cpu,
                self.log_dir,
            )
            for index, port in enumerate(ports)
        ]
        self.progress(f"starting {', '.join(p.name for p in servers)}")
        self._launch(servers)
        try:
            token = trio.run(obtain_token, ports[0])
            self.progress("T1: token by the OAuth flow (one user for every client)")
            pids = [server.pid for server in servers]

            def arm(clients: int, duration: float) -> dict[str, Any]:
                calls_before = command_calls([self.redis_port])
                result = trio.run(
                    lambda: run_tasks(
                        ports=ports,
                        token=token,
                        clients=clients,
                        duration=duration,
                        poll_interval=opts.t1_poll_interval,
                        worker_pids=pids,
                    )
                )
                calls = calls_between(calls_before, command_calls([self.redis_port]))
                done = max(1, result["tasks"] + result["tasks_after_window"])
                result["redis_calls_per_task"] = sum(calls.values()) / done
                result["redis_commands_per_task"] = {k: v / done for k, v in calls.items()}
                return result

            if opts.warmup > 0:
                arm(opts.t1_clients, opts.warmup)
                self.progress("warmed up T1")
            calls_before, cpu_before = command_calls([self.redis_port]), [cpu_seconds(pid) for pid in pids]
            time.sleep(T1_IDLE_SECONDS)
            idle = calls_between(calls_before, command_calls([self.redis_port]))
            idle_per_s = sum(idle.values()) / T1_IDLE_SECONDS
            idle_cpu = sum(cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True))
            idle_cpu /= T1_IDLE_SECONDS
            self.progress(
                f"T1: with no task, {idle_per_s:.0f} Redis commands/s and servers CPU {idle_cpu:.0%} "
                f"({T1_INSTANCES} instances)"
            )
            load_runs: list[dict[str, Any]] = []
            latency_runs: list[dict[str, Any]] = []
            for run in range(opts.runs):
                label = f"[run {run + 1}/{opts.runs}] T1"
                for runs, clients, duration in (
                    (load_runs, opts.t1_clients, opts.t1_duration),
                    (latency_runs, 1, opts.t1_latency_duration),
                ):
                    result = arm(clients, duration)
                    runs.append(result)
                    self.progress(
                        f"{label} c={clients:<3} {result['tasks_per_s']:6.0f} tasks/s  created p50 "
                        f"{result['created_ms']['p50']:.1f} p99 {result['created_ms']['p99']:.1f} ms  queue p50 "
                        f"{result['queue_ms']['p50']:.1f} p99 {result['queue_ms']['p99']:.1f} ms  "
                        f"{result['polls_per_task']:.1f} polls/task  {result['redis_calls_per_task']:.1f} Redis "
                        f"cmds/task  errors {result['errors']}  client CPU {result['generator_cpu']:.0%}  "
                        f"servers CPU {result['server_cpu']:.0%}"
                    )
            if opts.profile and profiling.py_spy() is not None:

                def load() -> str:
                    result = arm(opts.t1_clients, opts.profile_seconds)
                    return (
                        f"T1 c={opts.t1_clients}: {result['tasks_per_s']:.0f} tasks/s through the 3 instances "
                        "while instance A was sampled"
                    )

                self._profile_one("T1", pids[0], load)
        finally:
            self._stop(servers)
        self.data["scenarios"]["T1"] = {
            "instances": T1_INSTANCES,
            "auth": "embedded (one bearer token, one user)",
            "task_workers_per_instance": T1_TASK_WORKERS,
            "poll_interval_ms": opts.t1_poll_interval * 1000,
            "redis_idle_calls_per_s": idle_per_s,
            "redis_idle_commands_per_s": {k: v / T1_IDLE_SECONDS for k, v in idle.items()},
            "servers_idle_cpu": idle_cpu,
            "load": {"runs": load_runs, "median": _t1_median(load_runs)},
            "latency": {"runs": latency_runs, "median": _t1_median(latency_runs)},
        }

    # --- phase 2: S4, S4C, S4b ------------------------------------------------------------------------

    def _stream_server(self, name: str, backend: str, **extra: object) -> tuple[Proc, int, str]:
        """A fresh refserver for a streams scenario (its RSS baseline is clean), with a bench token."""
        port = free_port()
        settings: dict[str, Any] = {"subscription_update_interval": self.options.s4_update_interval, **extra}
        if backend == "redis":
            settings["redis_url"] = self._redis_url()
        server = hypercorn_server(
            name, "refserver.app:app", port, refserver_env(port, **settings), self.options.server_cpu, self.log_dir
        )
        self._launch([server])
        return server, port, trio.run(obtain_token, port)

    def _stream_count(self, name: str, wanted: int) -> int:
        limit = raise_fd_limit(wanted + FD_HEADROOM)
        if limit >= wanted + FD_HEADROOM:
            return wanted
        count = max(1, limit - FD_HEADROOM)
        self.progress(f"{name}: only {limit} file descriptors allowed: {count} streams instead of {wanted}")
        return count

    def phase_two(self) -> None:
        count: int | None = None
        if self.wants("S4"):
            self.guarded("S4", lambda: self.streams("S4", cluster=False))
            count = self.data["scenarios"].get("S4", {}).get("sessions_requested")
        if self.wants("S4C") and self.cluster_ports:
            self.guarded("S4C", lambda: self.streams("S4C", cluster=True))
            count = count or self.data["scenarios"].get("S4C", {}).get("sessions_requested")
        if count:
            floor_count = count

            def floor() -> None:
                held = self.stream_floor(floor_count)
                for name in ("S4", "S4C"):
                    if name in self.data["scenarios"]:
                        self.data["scenarios"][name]["floor"] = held

            self.guarded("S4 floor", floor)

    def streams(self, name: str, *, cluster: bool) -> None:
        """S4 (the single Redis, or memory with --s4-backend memory) or S4C (the cluster): N sessions with a stream
        each on a fresh instance, and the notifier's rounds to all of them."""
        opts = self.options
        port = free_port()
        # The sessions are all created before their streams open, which takes minutes at 10,000: the idle
        # TTL is raised so the first ones are not reaped meanwhile (it changes nothing else measured).
        settings: dict[str, Any] = {
            "subscription_update_interval": opts.s4_update_interval,
            "session_idle_ttl": S4_IDLE_TTL,
        }
        redis_ports: list[int] = []
        connection_ports: list[int] = []
        backend = opts.s4_backend
        if cluster:
            settings.update(redis_url=self._cluster_url(), redis_cluster=True)
            redis_ports, connection_ports, backend = self.cluster_masters, self.cluster_ports, CLUSTER_DESCRIPTION
        elif opts.s4_backend == "redis":
            settings["redis_url"] = self._redis_url()
            redis_ports = [self.redis_port]
        env = refserver_env(port, **settings)
        label = "S4C-redis-cluster" if cluster else f"S4-{opts.s4_backend}"
        server = hypercorn_server(label, "refserver.app:app", port, env, opts.server_cpu, self.log_dir)
        self._launch([server])
        try:
            token = trio.run(obtain_token, port)
            trio.run(new_session, port, token)  # warm the code paths before the RSS baseline
            count = opts.s4_sessions
            limit = raise_fd_limit(count + FD_HEADROOM)
            if limit < count + FD_HEADROOM:
                count = max(1, limit - FD_HEADROOM)
                self.progress(
                    f"{name}: only {limit} file descriptors allowed: {count} sessions, not {opts.s4_sessions}"
                )
            self.progress(f"{name}: opening {count} sessions with a GET stream each ({backend})")
            result = trio.run(
                lambda: run_streams(
                    port=port,
                    token=token,
                    count=count,
                    interval=opts.s4_update_interval,
                    rounds=opts.s4_rounds,
                    worker_pid=server.pid,
                    redis_ports=redis_ports,
                    connection_ports=connection_ports,
                    progress=self.progress,
                    label=name,
                )
            )
        finally:
            self._stop([server])
        self.data["scenarios"][name] = {"backend": backend, **result}

    def listen_streams(self) -> None:
        if not self.wants("S4b"):
            return
        opts = self.options
        count = self._stream_count("S4b", opts.s4b_streams)
        # Room for every stream and the warm-up one (the default limit is 10,000 per instance).
        server, port, token = self._stream_server(
            f"S4b-{opts.s4b_backend}", opts.s4b_backend, max_listeners=count + 100
        )
        trio.run(warm_listener, port, token)  # warm the code paths before the RSS baseline
        self.progress(f"S4b: opening {count} subscriptions/listen streams")
        result = trio.run(
            lambda: run_listen_streams(
                port=port,
                token=token,
                count=count,
                interval=opts.s4_update_interval,
                rounds=opts.s4_rounds,
                worker_pid=server.pid,
                redis_port=self.redis_port if opts.s4b_backend == "redis" else None,
                progress=self.progress,
            )
        )
        self.data["scenarios"]["S4b"] = {"backend": opts.s4b_backend, **result}
        self._stop([server])
        s4_floor = self.data["scenarios"].get("S4", {}).get("floor")
        # The floor is the same bare stream whatever the request: S4's, when it held as many, serves both.
        same = s4_floor is not None and s4_floor["streams_held"] + s4_floor["streams_failed"] == count
        self.data["scenarios"]["S4b"]["floor"] = s4_floor if same else self.stream_floor(count)

    def stream_floor(self, count: int) -> dict[str, Any]:
        """The same number of streams on a bare ASGI app: what Hypercorn, h11 and trio alone cost per stream; and
        (`watched`) with the nursery, disconnect watcher and heartbeat scope any stream that sends must add."""
        floor = self._bare_streams("S4-floor", count, "/mcp")
        floor["watched"] = self._bare_streams("S4-floor-watched", count, "/watched")
        return floor

    def _bare_streams(self, name: str, count: int, path: str) -> dict[str, Any]:
        port = free_port()
        server = hypercorn_server(
            name, "bench.bare_stream_app:app", port, {**os.environ}, self.options.server_cpu, self.log_dir
        )
        self._launch([server])
        try:
            held: dict[str, Any] = trio.run(
                lambda: run_floor_streams(
                    port=port, count=count, worker_pid=server.pid, progress=self.progress, path=path
                )
            )
        finally:
            self._stop([server])
        return held

    # --- the whole run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data.update(
            timestamp=self.stamp,
            options={k: (str(v) if isinstance(v, Path) else v) for k, v in _options_dict(self.options).items()},
            machine=machine_info(wrk_version()),
            code=code_version(ROOT),
        )
        try:
            self.phase_one()
            self.guarded("T1", self.durable_tasks)
            self.phase_two()
            self.guarded("S4b", self.listen_streams)
        finally:
            self.stop_everything()
        self.data["machine"]["load_average_at_end"] = load_average()
        if code_version(ROOT)["refserver_digest"] != self.data["code"]["refserver_digest"]:
            self.data["code"]["changed_during_run"] = True
            self.progress("warning: refserver/ changed on disk during the run (servers started later saw it)")
        return self.data


def _options_dict(options: Options) -> dict[str, Any]:
    return attrs.asdict(options)


def _median_of_dicts(runs: list[dict[str, Any]]) -> dict[str, float]:
    medians = median_result([_as_result(r) for r in runs])
    medians["interference"] = median(r["interference"] for r in runs)
    if all("redis_calls_per_request" in r for r in runs):
        medians["redis_calls_per_request"] = median(r["redis_calls_per_request"] for r in runs)
    return medians


def _t1_median(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median over runs of each run's figure (tasks/s, every latency percentile); errors are summed."""
    medians: dict[str, float] = {
        key: median(r[key] for r in runs)
        for key in ("tasks_per_s", "polls_per_task", "redis_calls_per_task", "generator_cpu", "server_cpu")
    }
    medians["errors"] = sum(r["errors"] for r in runs)
    figures = ("created_ms", "queue_ms", "queue_lower_ms", "stored_ms", "end_to_end_ms", "tasks_get_ms")
    for key in (*figures, "tasks_per_s_windows"):
        for stat in ("min", "p50", "p90", "p99", "max"):
            values = [r[key][stat] for r in runs if stat in r[key]]
            if values:
                medians[f"{key.removesuffix('_ms')}_{stat}" + ("_ms" if key.endswith("_ms") else "")] = median(values)
    return medians


def _as_result(data: dict[str, Any]) -> WrkResult:
    names = {field.name for field in attrs.fields(WrkResult)}
    return WrkResult(**{k: v for k, v in data.items() if k in names})


def ensure_python_extras(progress: Progress) -> None:
    """matplotlib (the plot) and py-spy (the profile): the `bench` extra, installed into this venv if missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if sys.prefix == sys.base_prefix:
            raise SystemExit("matplotlib is missing: pip install -e '.[bench]' (in the project's venv)") from None
        progress("installing the bench extra into this venv: pip install -e '.[bench]'")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"], check=True)


def prepare(options: Options, progress: Progress) -> None:
    """Before anything starts: wrk and the Python extras present, our own process on the generator core,
    enough file descriptors for S4."""
    ensure_wrk()
    ensure_python_extras(progress)
    if options.nice:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if options.nice != current:
            os.nice(options.nice - current)  # children (servers, Redis, wrk) inherit it
        raise_priority(os.getpid(), options.nice)  # and our own session's share (wrk, the Trio clients)
    if options.client_cpu is not None:
        os.sched_setaffinity(0, {options.client_cpu})
    raise_fd_limit(max(options.s4_sessions, options.s4b_streams) + FD_HEADROOM)


def run_benchmark(options: Options, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or make_progress()
    prepare(options, progress)
    return Runner(options, timestamp(), progress).run()
