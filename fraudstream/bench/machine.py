"""The report's header: which machine, which versions, which commit."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("lightgbm", "treelite", "tl2cgen", "numba", "numpy", "pyarrow", "confluent-kafka")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def librdkafka_version() -> str | None:
    try:
        import confluent_kafka
    except ImportError:
        return None
    return str(confluent_kafka.libversion()[0])


def kafka_version() -> str:
    """The broker the benchmarks start (the local jars' version), or the configured cluster."""
    from scoring.settings import Settings

    kafka = Settings().kafka
    if kafka.bootstrap_servers:
        return f"external cluster at {kafka.bootstrap_servers} (version not queried)"
    return f"{kafka.local_version} (local KRaft broker from jars)"


def git_state(repo: Path) -> dict[str, Any]:
    """Commit and dirty flag: a report from uncommitted code says so."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "changed_files": None if status is None else len(status.splitlines()),
    }


def describe(repo: Path) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": memory_gib(),
            "load_average": list(load) if load else None,
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        },
        "versions": {
            "python": platform.python_version(),
            **package_versions(),
            "librdkafka": librdkafka_version(),
            "kafka": kafka_version(),
        },
        "git": git_state(repo),
    }
