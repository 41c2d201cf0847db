"""Where the server's time goes: py-spy samples the worker while wrk floods it, then a summary.

The raw output (collapsed stacks, one `frame;frame;... count` per line) is kept next to the results:
it loads in speedscope (https://www.speedscope.app) or flamegraph.pl. The summary attributes samples
to packages (self: the innermost frame; inclusive: anywhere on the stack) and lists the hottest
functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

_FRAME: Final = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


SCHEDULER: Final = "unrolled_run (trio/"


def py_spy() -> str | None:
    return shutil.which("py-spy") or (
        str(Path(sys.executable).with_name("py-spy")) if Path(sys.executable).with_name("py-spy").exists() else None
    )


def start_recording(pid: int, seconds: float, output: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    command = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", str(rate), "--format", "raw", "--function", "--nonblocking", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _package(path: str) -> str:
    """py-spy shortens paths to `package/module.py` (site-packages and the project) or `module.py` (stdlib)."""
    first, sep, _ = path.partition("/")
    return first if sep else Path(path).stem


def _label(frame: str) -> tuple[str, str]:
    """`func (pkg/module.py:line)` -> ("func (pkg/module.py)", "pkg")."""
    match = _FRAME.match(frame)
    if not match:
        return frame, "?"
    file = match.group("file")
    return f"{match.group('func')} ({file})", _package(file)


def summarize(collapsed: Path, top: int = 15) -> dict[str, Any]:
    total = 0
    self_funcs: Counter[str] = Counter()
    incl_funcs: Counter[str] = Counter()
    self_pkgs: Counter[str] = Counter()
    incl_pkgs: Counter[str] = Counter()
    package_of: dict[str, str] = {}
    in_scheduler = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_label(f) for f in stack.split(";") if f]
        # Below the scheduler is the task's own stack: the frames above it (process start-up, the
        # worker, trio.run) are on every sample and say nothing.
        roots = [i for i, (name, _) in enumerate(frames) if name.startswith(SCHEDULER)]
        if roots and roots[-1] + 1 < len(frames):
            frames = frames[roots[-1] + 1 :]
        elif roots:
            in_scheduler += count  # trio's run loop itself (I/O polling, rescheduling), no task
        if not frames:
            continue
        total += count
        leaf, leaf_pkg = frames[-1]
        self_funcs[leaf] += count
        self_pkgs[leaf_pkg] += count
        for name, pkg in frames:
            package_of[name] = pkg
        for name in {name for name, _ in frames}:
            incl_funcs[name] += count
        for pkg in {pkg for _, pkg in frames}:
            incl_pkgs[pkg] += count

    def share(counter: Counter[str], limit: int) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(limit)] if total else []

    ours = Counter({name: n for name, n in incl_funcs.items() if package_of.get(name) == "refserver"})
    return {
        "samples": total,
        "scheduler_only": in_scheduler / total if total else 0.0,
        "self_by_package": share(self_pkgs, top),
        "inclusive_by_package": share(incl_pkgs, top),
        "self_functions": share(self_funcs, top),
        "inclusive_refserver_functions": share(ours, top * 2),
    }
