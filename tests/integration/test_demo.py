"""The README's main job, `fraudstream demo`, and `fraudstream up`, end to end as subprocesses.

Both run the real services (worker, trainer, API as ``fraudstream`` subprocesses) on a real broker.
The demo uses the session's broker; the ``up`` test lets ``up`` start (and stop) a broker of its
own. Each then checks that no process of the run is left: every pid in the run's
``processes.json`` is gone, and no process on the machine carries the run's
``FRAUDSTREAM_RUN`` marker in its environment.

The demo runs with card-number tokenization on (issue 9): its API bank's live transactions carry
raw card numbers, and at the end it scans the run's files and topic records for card numbers. The
demo test checks the scan's verdict, that the API really received card numbers and turned them into
the tokens the bank's Kafka-fed history carries, and — independently of the scanner's rules — that
none of the demo's card numbers occurs in any file of the run or record of ``transactions``.
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

import pyarrow.parquet as pq
import pytest

from fraudstream.commands.demo_cards import card_numbers_for
from scoring.settings import KafkaSettings
from tests.integration.stream_harness import read_topic

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


def digit_runs(data: bytes) -> set[bytes]:
    """Every 13-19 digit substring of every run of 13+ digits in ``data``."""
    out: set[bytes] = set()
    for match in re.finditer(rb"[0-9]{13,}", data):
        run = match.group()
        for size in range(13, min(19, len(run)) + 1):
            out.update(run[i : i + size] for i in range(len(run) - size + 1))
    return out


def test_demo_runs_the_stack_checks_it_and_stops_everything(
    kafka_env: dict[str, str], kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
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
    with_numbers = re.search(r"([\d,]+) with a raw card number\)", out)
    assert with_numbers and int(with_numbers.group(1).replace(",", "")) > 0, out[-3000:]
    scan = re.search(r"card-number scan\s*│ card numbers found: (\d+) in ([\d,]+) records, "
                     r"([\d,]+) files", out)  # fmt: skip
    assert scan, out[-3000:]
    assert scan.group(1) == "0"
    assert int(scan.group(2).replace(",", "")) > 900  # every topic of the run was read
    assert int(scan.group(3).replace(",", "")) >= 5  # logs, data, registry, state, processes
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
    assert summary["card-number scan"].startswith("card numbers found: 0 in ")
    check_card_numbers_became_tokens(run_dir, kafka_settings, topic_prefix)


def check_card_numbers_became_tokens(
    run_dir: Path, kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    """bank01's transactions on ``transactions`` — the history the workload produced and the live
    ones the API produced from ``card_number`` — carry exactly the tokens of the run's data file;
    and no card number of the demo is in any file of the run or record of ``transactions``."""
    data = pq.read_table(run_dir / "data" / "transactions.parquet", columns=[
        "transaction_id", "card_id", "bank_id"]).to_pylist()  # fmt: skip
    card_of = {(r["bank_id"], r["transaction_id"]): r["card_id"] for r in data}
    bank01 = {r["card_id"] for r in data if r["bank_id"] == "bank01"}
    others = {r["card_id"] for r in data if r["bank_id"] != "bank01"}
    assert bank01 and all(c.startswith("tok_k1_") for c in bank01)
    assert others and all(re.fullmatch(r"card_\d{6}", c) for c in others)
    kafka = kafka_settings.model_copy(update={"topic_prefix": topic_prefix})
    records = read_topic(kafka, kafka.topic("transactions"), expected=1, quiet=3.0)
    seen = 0
    for _key, value, _headers in records:
        record = json.loads(value)
        if record.get("bank_id") == "bank01":
            assert record["card_id"] == card_of[("bank01", record["transaction_id"])], record
            seen += 1
    assert seen > 0
    # The demo's card numbers: the simulator's card ids (800 cards) through demo_cards.py.
    numbers = {n.encode() for n in card_numbers_for([f"card_{i:06d}" for i in range(800)]).values()}
    in_files = [
        str(path)
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and digit_runs(path.read_bytes()) & numbers
    ]
    assert in_files == []
    assert not any(digit_runs(value) & numbers for _key, value, _headers in records)


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
