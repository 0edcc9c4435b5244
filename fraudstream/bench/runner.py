"""Runs one benchmark program as a subprocess: its output to a log file, a time limit, a verdict."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fraudstream.bench.plan import Step

TAIL_LINES = 15


@dataclass
class StepRun:
    name: str
    status: str  # ok | failed | timeout | skipped
    data: str
    command: str
    seconds: float = 0.0
    log: str | None = None  # relative to the report directory
    reason: str | None = None  # skip reason, or the end of the log when it failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _display(argv: list[str], benchmarks: Path) -> str:
    """The command as a reader would type it from the repository root."""
    shown = ["python" if a == sys.executable else a for a in argv]
    return " ".join(a.replace(str(benchmarks.parent) + os.sep, "") for a in shown)


def run(step: Step, *, benchmarks: Path, report_dir: Path, programs_out: Path) -> StepRun:
    argv = step.argv(sys.executable, benchmarks)
    command = _display(argv, benchmarks)
    if step.skip:
        return StepRun(step.name, "skipped", step.data, command, reason=step.skip)
    logs = report_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{step.name}.log"
    env = {**os.environ, **step.extra_env, "PYTHONUNBUFFERED": "1"}
    began = time.monotonic()
    with log_path.open("wb") as log:
        # its own session, so a timeout ends the program and the broker/workers it started
        process = subprocess.Popen(
            argv,
            cwd=benchmarks.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=step.timeout_s)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            _stop(process)
            status = "timeout"
        except BaseException:  # Ctrl-C: do not leave a broker behind
            _stop(process)
            raise
    seconds = time.monotonic() - began
    reason = None
    if status == "ok" and step.writes_to_results_as:
        _move_results(benchmarks / "results", step.writes_to_results_as, programs_out, step.name)
    if status == "ok" and not (programs_out / f"{step.name}.json").exists():
        status, reason = "failed", f"exited 0 but wrote no {step.name}.json"
    if status != "ok" and reason is None:
        tail = log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        reason = (
            (f"no result within {step.timeout_s:.0f} s" if status == "timeout" else "exit status")
            + "; end of its log:\n"
            + "\n".join(tail)
        )
    return StepRun(
        step.name,
        status,
        step.data,
        command,
        seconds=seconds,
        log=str(log_path.relative_to(report_dir)),
        reason=reason,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _move_results(results: Path, stem: str, programs_out: Path, name: str) -> None:
    programs_out.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".md", ".png"):
        source = results / f"{stem}{suffix}"
        if source.exists():
            shutil.move(str(source), programs_out / f"{name}{suffix}")
