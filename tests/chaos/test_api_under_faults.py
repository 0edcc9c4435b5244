"""The API while the stream is slow or stopped (issue 9, item 2), on the session's broker.

A worker and an API replica (subprocesses) run against fresh topics; a client sends one
transaction at a time. The worker is then frozen (SIGSTOP: "slow"), resumed (SIGCONT), killed
(SIGKILL: "stopped") and started again. While the stream cannot answer, every call must still get
a 2xx at the deadline (median within 10 ms, nine in ten within 50 ms on this loaded machine): a
degraded fallback decision, never a 5xx. When the stream is back, non-degraded answers must
resume by themselves, and in the end every transaction sent has exactly one decision on
``decisions`` (the stream decides the ones the fallback answered once it is back).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from api.security import hash_key
from scoring.registry import ModelRegistry
from scoring.settings import KafkaSettings
from stream.topics import create_topics
from tests.integration.stream_harness import (
    ApiProcess,
    Stack,
    WorkerProcess,
    comparable,
    decisions_by_id,
    read_topic,
)
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KEY = "key-faults-0123456789"
DEADLINE_MS = 200.0
# The API answers at the deadline from an asyncio timer. On this 2-core machine, shared with other
# jobs (load average 10-20 at times), its event loop is sometimes not scheduled for 100+ ms, so
# single answers come late for reasons that are not the API's; the median must still be at the
# deadline and nine in ten within a small margin. The maximum is printed (docs/reliability.md).
MEDIAN_MARGIN_MS = 10.0
P90_MARGIN_MS = 50.0
RECOVERY_S = 60.0


@dataclass
class Answer:
    transaction_id: str
    status: int
    client_ms: float
    body: dict[str, Any] | None


class Client:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30)
        self.sent: list[Answer] = []

    def send(self) -> Answer:
        i = len(self.sent)
        body = {
            "transaction_id": f"faults-{i:05d}",
            "card_id": f"faults-card-{i % 50}",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "amount": round(10.0 + (i * 37) % 400, 2),
            "channel": "ecom",
        }
        started = time.perf_counter()
        response = self.http.post("/v1/transactions", json=body)
        elapsed = (time.perf_counter() - started) * 1000
        answer = Answer(
            body["transaction_id"],
            response.status_code,
            elapsed,
            response.json() if response.status_code == 200 else None,
        )
        self.sent.append(answer)
        return answer

    def until_not_degraded(self, timeout: float) -> float:
        """Seconds until the first non-degraded answer; every answer meanwhile is a 2xx."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            answer = self.send()
            assert answer.status == 200, answer
            assert answer.body is not None
            if not answer.body["degraded"]:
                return time.monotonic() - began
            time.sleep(0.1)
        raise AssertionError(f"no non-degraded answer within {timeout} s")

    def degraded_for(self, seconds: float) -> list[Answer]:
        """Calls for ``seconds`` while the stream cannot answer: all must be degraded 2xx."""
        out = []
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            answer = self.send()
            out.append(answer)
            time.sleep(0.05)
        return out


@dataclass
class Deployment:
    kafka: KafkaSettings
    stack: Stack
    worker: WorkerProcess
    api: ApiProcess


@pytest.fixture
def deployment(
    kafka_settings: KafkaSettings,
    kafka_env: dict[str, str],
    topic_prefix: str,
    tmp_path: Path,
    free_tcp_ports: Callable[[int], list[int]],
) -> Iterator[Deployment]:
    transactions, labels = simulate(SimulationConfig(days=5, cards=400, seed=5))
    registry = ModelRegistry(tmp_path / "registry")
    start = transactions.column("timestamp")[0].as_py()
    model = train_and_register(
        transactions, labels, registry=registry, until=start + timedelta(days=4)
    )
    registry.promote(model.version)
    kafka = kafka_settings.model_copy(update={"topic_prefix": topic_prefix, "partitions": 3})
    create_topics(kafka)
    stack = Stack(kafka, kafka_env, tmp_path / "registry", tmp_path, free_tcp_ports)
    api: ApiProcess | None = None
    try:
        # live settings: a quiet partition stops holding the watermark after 20 ms
        worker = stack.start("faulty", FRAUD_STREAM__SOURCE_IDLE_MS="20")
        worker.wait_ready()
        env = {
            **kafka_env,
            "FRAUD_KAFKA__TOPIC_PREFIX": topic_prefix,
            "FRAUD_API__API_KEYS": json.dumps({"bank-f": [hash_key(KEY)]}),
            "FRAUD_API__DEADLINE_MS": str(DEADLINE_MS),
        }
        (port,) = free_tcp_ports(1)
        api = ApiProcess.start(env, port, tmp_path / "registry", tmp_path / "api.log")
        api.wait_ready()
        yield Deployment(kafka, stack, worker, api)
    finally:
        if api is not None:
            assert api.stop() == 0, api.tail()
        stack.close()


def _check_degraded(answers: list[Answer], what: str) -> None:
    assert len(answers) >= 5, f"{what}: only {len(answers)} calls"
    assert [a.status for a in answers] == [200] * len(answers), f"{what}: {answers}"
    bodies = [a.body for a in answers if a.body is not None]
    assert all(b["degraded"] for b in bodies), f"{what}: a non-degraded answer"
    servers = np.array([b["latency_ms"] for b in bodies])
    clients = np.array([a.client_ms for a in answers])
    print(
        f"{what}: {len(answers)} calls, all degraded; API latency_ms median "
        f"{np.median(servers):.1f} / p90 {np.quantile(servers, 0.9):.1f} / max {servers.max():.1f}"
        f" ms; client median {np.median(clients):.1f} / p90 {np.quantile(clients, 0.9):.1f} / "
        f"max {clients.max():.1f} ms (deadline {DEADLINE_MS:g} ms)"
    )
    assert np.median(servers) <= DEADLINE_MS + MEDIAN_MARGIN_MS, f"{what}: {servers}"
    assert np.quantile(servers, 0.9) <= DEADLINE_MS + P90_MARGIN_MS, f"{what}: {servers}"
    # the client's side adds loopback HTTP and JSON to the same
    assert np.quantile(clients, 0.9) <= DEADLINE_MS + 2 * P90_MARGIN_MS, f"{what}: {clients}"


def test_the_api_answers_in_time_while_the_stream_is_slow_or_stopped_and_recovers(
    deployment: Deployment,
) -> None:
    d = deployment
    client = Client(d.api.url)
    warm = client.until_not_degraded(RECOVERY_S)
    print(f"\nfirst non-degraded answer after {warm:.1f} s")

    d.worker.process.send_signal(signal.SIGSTOP)  # slow: the worker hangs mid-flight
    try:
        _check_degraded(client.degraded_for(8.0), "worker frozen (SIGSTOP)")
    finally:
        d.worker.process.send_signal(signal.SIGCONT)
    back = client.until_not_degraded(RECOVERY_S)
    print(f"worker resumed: non-degraded answers again after {back:.1f} s")

    d.worker.kill()  # stopped
    _check_degraded(client.degraded_for(5.0), "worker killed (SIGKILL)")
    restarted = d.stack.start("faulty", FRAUD_STREAM__SOURCE_IDLE_MS="20")
    began = time.monotonic()
    while restarted.process.poll() is None and time.monotonic() - began < 120:
        answer = client.send()  # while it starts: still answered, degraded or not
        assert answer.status == 200, answer
        try:
            if restarted.get("/readyz")[0] == 200:
                break
        except OSError:
            pass
    restarted.wait_ready()
    again = client.until_not_degraded(RECOVERY_S)
    print(f"worker restarted: non-degraded answers again {again:.1f} s after it was ready")

    assert all(a.status == 200 for a in client.sent)
    decided, twice = decisions_by_id(
        read_topic(d.kafka, d.kafka.topic("decisions"), expected=len(client.sent), quiet=2.0)
    )
    assert twice == [], f"decided twice: {twice[:5]}"
    missing = [a.transaction_id for a in client.sent if a.transaction_id not in decided]
    assert missing == [], f"{len(missing)} of {len(client.sent)} calls never decided by the stream"
    for a in client.sent:
        if a.body is not None and not a.body["degraded"]:
            # the API answers from read_uncommitted decisions: a redo after an aborted Kafka
            # transaction supersedes the record it answered with, with new timings only
            # (docs/api.md, "Answering before the commit")
            assert comparable(a.body) == comparable(decided[a.transaction_id]), a.transaction_id
    assert restarted.stop() == 0, restarted.tail()
