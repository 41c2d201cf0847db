"""What the numbers were measured on: CPU, cores, memory, kernel, Python and package versions, load."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("hypercorn", "quart", "quart-trio", "trio", "trio-asyncio", "h11", "mcp", "uvicorn", "starlette", "redis")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _redis_version() -> str:
    binary = shutil.which("redis-server")
    if not binary:
        return "-"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def code_version(root: Path) -> dict[str, Any]:
    """The commit, whether the work tree differs from it, and a digest of refserver/ as it is on disk
    (the servers import exactly these files at start-up)."""
    digest = hashlib.sha256()
    for path in sorted((root / "refserver").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "-",
        "refserver_modified_since_commit": bool(git("status", "--porcelain", "--", "refserver")),
        "refserver_digest": digest.hexdigest()[:12],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(wrk_version: str) -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "wrk": wrk_version,
        "redis_server": _redis_version(),
        "load_average_at_start": load_average(),
    }
