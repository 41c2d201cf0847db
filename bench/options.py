"""What one benchmark run does: scenarios, sizes and CPU placement (full defaults, or `--quick`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs

ALL_SCENARIOS: Final = (
    "S0",
    "S0A",
    "S1",
    "S1T",
    "M1",
    "S2",
    "S2C",
    "S3",
    "S4",
    "S4C",
    "S4b",
    "S5",
    "P",
    "PJ",
    "PJA",
    "IP",
    "IR",
    "T1",
)
FLOOD_SCENARIOS: Final = ("S0", "S0A", "S1", "S1T", "M1", "S2", "S2C", "P", "PJ", "PJA")
"""Measured by wrk at every concurrency, interleaved in the same run (the ratios compare them)."""
RATIO_CONCURRENCY: Final = 32
"""The concurrency the throughput targets are stated at."""


@attrs.frozen(kw_only=True)
class Options:
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    runs: int = 3
    out: Path = Path("bench/results")
    quick: bool = False
    concurrencies: tuple[int, ...] = (1, 8, 32, 128)
    duration: float = 6.0
    """Seconds of each wrk run (one concurrency, one target, one repetition)."""
    warmup: float = 2.0
    s3_duration: float = 5.0
    """Seconds of each S3 arm (one instance / alternating) per repetition."""
    s4_sessions: int = 10_000
    s4_update_interval: float = 10.0
    """REFSERVER_SUBSCRIPTION_UPDATE_INTERVAL for S4: rounds must be told apart by their quiet gap."""
    s4_rounds: int = 3
    s4_backend: str = "redis"
    """`redis` (the scenario: Redis connections are part of it) or `memory` (to separate the cost of
    holding streams from the cost of the Redis path)."""
    s4b_streams: int = 10_000
    """S4b: concurrent 2026-07-28 `subscriptions/listen` streams on one worker."""
    s4b_backend: str = "redis"
    """S4b's backend, as for S4 (it uses S4's update interval and rounds)."""
    s5_duration: float = 10.0
    ip_requests: int = 3000
    """IP: requests per batch and request shape (S1's, M1's) handed to the application in-process."""
    ip_batches: int = 7
    ir_requests: int = 500
    """IR: requests counted per arm under callgrind (one run: instruction counts do not vary with the machine); at
    most 800, on one keep-alive connection after the warm-up."""
    s5_workers: int = 16
    t1_clients: int = 16
    """T1: concurrent client loops (create a task, poll it to the end, again) in the throughput arm."""
    t1_duration: float = 8.0
    """Seconds of each T1 throughput arm per repetition."""
    t1_latency_duration: float = 3.0
    """Seconds of each T1 latency arm (one client loop: the queue's delay without load) per repetition."""
    t1_poll_interval: float = 0.005
    """Seconds between a T1 client's `tasks/get` answer and its next poll (the first goes out at once)."""
    server_cpu: int | None = 0
    client_cpu: int | None = 1
    nice: int = 0
    """Niceness of everything the bench starts (inherited, and set on each new session's scheduler
    autogroup): negative (as root) so that other work on a shared machine takes less of the pinned
    cores. The default is -15 when run as root."""
    max_interference: float = 0.15
    """A wrk run is repeated (up to `retries` times) when other processes used more than this share of
    the server's core during it; the least disturbed attempt is kept, every attempt is recorded."""
    retries: int = 2
    profile: bool = True
    profile_seconds: float = 8.0

    @classmethod
    def quick_defaults(cls) -> dict[str, object]:
        return {
            "quick": True,
            "runs": 1,
            "concurrencies": (1, RATIO_CONCURRENCY),
            "duration": 1.0,
            "warmup": 0.0,
            "s3_duration": 0.5,
            "s4_sessions": 50,
            "s4_update_interval": 1.0,
            "s4_rounds": 1,
            "s4b_streams": 50,
            "s5_duration": 1.0,
            "ip_requests": 100,
            "ip_batches": 1,
            "ir_requests": 20,
            "s5_workers": 4,
            "t1_clients": 2,
            "t1_duration": 2.0,
            "t1_latency_duration": 0.5,
            "retries": 0,
            "profile": False,
            "profile_seconds": 1.0,
        }


def default_nice() -> int:
    return -15 if os.geteuid() == 0 else 0


def default_cpus() -> tuple[int | None, int | None]:
    """Server on the first core we may use, generator on the second; no pinning on one core."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None, None
    return usable[0], usable[1]
