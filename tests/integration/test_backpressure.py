"""A slow broker: the worker's memory stays flat, it does not exit, and afterwards every
transaction is decided exactly once (docs/stream.md, "Memory bounds").

The test starts its own broker (a LocalKafka on free ports, not the session's) and SIGSTOPs it for
30 s in the middle of a replay: the replay keeps producing (its client buffers), the worker's
Kafka transaction cannot commit, and when the broker returns the backlog arrives at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from scoring.registry import ModelRegistry
from scoring.settings import Settings
from stream.local_kafka import LocalKafka
from stream.replay import replay
from stream.topics import create_topics
from tests.integration.stream_harness import Stack, decisions_by_id, metric, read_topic
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STOPPED_S = 30.0
# The worker's resident memory may grow by at most this much from just before the broker stops
# until the backlog is decided (librdkafka's prefetch alone may take 64 MB).
RSS_GROWTH_BOUND = 150 * 2**20


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_stopped_broker_keeps_worker_memory_flat_and_decisions_exact(
    tmp_path: Path, free_tcp_ports: Callable[[int], list[int]]
) -> None:
    port, controller_port = free_tcp_ports(2)
    local = Settings().kafka.model_copy(
        update={
            "local_port": port,
            "local_controller_port": controller_port,
            "local_dir": tmp_path / "kafka",
        }
    )
    broker = LocalKafka(local)
    broker.up(timeout=180)
    stack: Stack | None = None
    try:
        kafka = local.model_copy(
            update={"bootstrap_servers": broker.bootstrap, "topic_prefix": "bp.", "partitions": 3}
        )
        create_topics(kafka)
        transactions, labels = simulate(SimulationConfig(days=8, cards=900, seed=9))
        registry = ModelRegistry(tmp_path / "registry")
        start = transactions.column("timestamp")[0].as_py()
        model = train_and_register(
            transactions, labels, registry=registry, until=start + timedelta(days=5), seed=1
        )
        registry.promote(model.version)
        ids = transactions.column("transaction_id").to_pylist()

        env = {**os.environ, "FRAUD_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
        stack = Stack(kafka, env, tmp_path / "registry", tmp_path, free_tcp_ports)
        worker = stack.start("slow-broker")
        worker.wait_ready()

        failed: list[int] = []
        producing = threading.Thread(
            target=lambda: failed.append(replay(transactions, labels, kafka=kafka, rate=800).failed)
        )
        producing.start()
        time.sleep(6.0)  # the worker is deciding live traffic
        before = rss_bytes(worker.process.pid)
        pid = broker.find_pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        samples = []
        try:
            stop_at = time.monotonic() + STOPPED_S
            while time.monotonic() < stop_at:
                samples.append(rss_bytes(worker.process.pid))
                assert worker.process.poll() is None, f"worker exited:\n{worker.tail()}"
                time.sleep(0.25)
        finally:
            os.kill(pid, signal.SIGCONT)
        producing.join(120)
        assert failed == [0]
        records = read_topic(kafka, stack.topics.decisions, expected=len(ids), timeout=90)
        samples.append(rss_bytes(worker.process.pid))
        assert worker.process.poll() is None, f"worker exited:\n{worker.tail()}"

        decided, twice = decisions_by_id(records)
        assert twice == [], f"{len(twice)} transactions decided twice, e.g. {twice[:3]}"
        missing = [i for i in ids if i not in decided]
        assert missing == [], f"{len(missing)} transactions without a decision, e.g. {missing[:3]}"
        growth = max(samples) - before
        assert growth < RSS_GROWTH_BOUND, f"worker RSS grew by {growth / 2**20:.0f} MiB"
        text = worker.metrics()
        assert metric(text, "fraudstream_feature_state_entities", entity="card") > 0
        assert metric(text, "fraudstream_feature_state_bytes") > 0
    finally:
        if stack is not None:
            stack.close()
        broker.down()
