"""The README's main job, `fraudstream demo`, and `fraudstream up`, end to end as subprocesses.

Both run the real services (worker, trainer, API as ``fraudstream`` subprocesses) on a real broker.
The demo uses the session's broker; the ``up`` test lets ``up`` start (and stop) a broker of its
own. Each then checks that no process of the run is left: every pid in the run's
``processes.json`` is gone, and no process on the machine carries the run's
``FRAUDSTREAM_RUN`` marker in its environment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its parent has not collected it yet
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return False


def processes_of_run(run_dir: Path) -> list[int]:
    """Pids of live processes whose environment carries this run's marker."""
    marker = f"FRAUDSTREAM_RUN={run_dir.resolve()}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_nothing_left(run_dir: Path) -> dict[str, Any]:
    record = json.loads((run_dir / "processes.json").read_text())
    pids = [s["pid"] for s in record["services"]]
    assert {s["name"] for s in record["services"]} >= {"worker-1", "trainer", "api"}
    broker = record.get("broker") or {}
    if broker.get("started_by_run"):
        pids.append(broker["pid"])
    assert [p for p in pids if alive(p)] == [], record
    assert processes_of_run(run_dir) == []
    return record


def test_demo_runs_the_stack_checks_it_and_stops_everything(
    kafka_env: dict[str, str], topic_prefix: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    env = {**kafka_env, "FRAUD_KAFKA__TOPIC_PREFIX": topic_prefix, "COLUMNS": "250"}
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "demo", "--run-dir", str(run_dir),
         "--days", "14", "--cards", "800", "--live-transactions", "900", "--status-every", "2"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = result.stderr
    assert result.returncode == 0, out[-6000:]
    for name in ("fraudstream demo", "last week, offline", "history", "live", "trainer",
                 "API latency p50 / p90 / p99", "degraded", "cost per transaction",
                 "consumer lag", "decision mix", "run directory"):  # fmt: skip
        assert name in out, name
    assert re.search(r"checks\s*│ passed", out)
    assert re.search(r"stream decisions\s*│ ([\d,]+) of \1 transactions decided, 0 twice", out)
    delta = re.search(r"max \|Δ score\| = (\S+) over ([\d,]+)", out)
    assert delta and float(delta.group(1)) == 0.0  # the worker agrees with score-log exactly
    live = re.search(r"live decisions\s*│ 900 of 900 transactions decided \(([\d,]+) sent", out)
    assert live and int(live.group(1).replace(",", "")) > 0  # some went through the API
    equal = re.search(r"([\d,]+) of \1 non-degraded answers equal the stream's", out)
    assert equal, out[-3000:]
    assert re.search(r"trainer\s*│ 1 rounds?, ", out)  # its first round ran (any verdict)
    assert re.search(r"phase: live", out)  # the plain status lines of a non-terminal
    stopped = re.search(r"services stopped \(exit codes\)\s*│ ([^│]*)│", out)
    assert stopped and sorted(stopped.group(1).strip().split(", ")) == [
        "api 0",
        "trainer 0",
        "worker-1 0",
    ]

    record = assert_nothing_left(run_dir)
    assert record["broker"]["started_by_run"] is False  # the session's broker: left running
    for name in ("worker-1", "trainer", "api"):
        assert (run_dir / "logs" / f"{name}.log").stat().st_size > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["checks"] == "passed"
    assert (run_dir / "scores.parquet").exists()
    assert (run_dir / "data" / "transactions.parquet").exists()
    assert any((run_dir / "registry" / "versions").iterdir())


def test_up_runs_until_sigint_then_stops_everything_it_started(
    tmp_path: Path, free_tcp_ports: Callable[[int], list[int]]
) -> None:
    run_dir = tmp_path / "run"
    port, controller = free_tcp_ports(2)
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("FRAUD_KAFKA__") and k != "FRAUD_KAFKA__BOOTSTRAP_SERVERS"
    }  # fmt: skip
    env.update(
        {
            "FRAUD_KAFKA__LOCAL_PORT": str(port),
            "FRAUD_KAFKA__LOCAL_CONTROLLER_PORT": str(controller),
            "FRAUD_KAFKA__LOCAL_DIR": str(tmp_path / "kafka"),
            "COLUMNS": "250",
        }
    )
    log = tmp_path / "up.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "up", "--run-dir", str(run_dir),
             "--days", "14", "--cards", "600", "--live-rate", "100", "--status-every", "2"],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and process.poll() is None:
                if log.read_text(errors="replace").count("phase: live") >= 3:
                    break
                time.sleep(1)
            text = log.read_text(errors="replace")
            assert process.poll() is None, text[-5000:]
            assert text.count("phase: live") >= 3, text[-5000:]
            process.send_signal(signal.SIGINT)
            code = process.wait(300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text(errors="replace")
    assert code == 0, text[-5000:]
    assert "stopping: Ctrl-C" in text
    for name in ("worker-1", "trainer", "api"):
        assert f"stopped {name} (exit 0)" in text, text[-3000:]
    assert re.search(r"broker: stopped pid \d+ \(clean shutdown\)", text)
    assert "fraudstream up" in text and re.search(r"sent\s*│ [\d,]+ transactions to Kafka", text)
    record = assert_nothing_left(run_dir)
    assert record["broker"]["started_by_run"] is True
