"""Running real workers against the real broker, and reading what they committed.

Workers run as subprocesses of ``fraudstream worker`` (as in production), so SIGKILL kills a real
process with its librdkafka threads and open Kafka transaction.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from scoring.settings import KafkaSettings
from stream.topics import TopicNames

# Exactness needs partitions never to be declared idle while the replay is still producing
# (see docs/stream.md, "Watermark and idle partitions"); 3 s is far above any producer pause here.
TEST_ENV = {
    "FRAUD_STREAM__SOURCE_IDLE_MS": "3000",
    "FRAUD_STREAM__LABEL_IDLE_MS": "3000",
    "FRAUD_STREAM__SESSION_TIMEOUT_MS": "6000",
    "FRAUD_STREAM__CHECKPOINT_INTERVAL_S": "2",
    "FRAUD_STREAM__BATCH_MAX": "2000",
}


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ApiProcess:
    """One ``fraudstream api`` replica as a subprocess."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(cls, env: dict[str, str], port: int, registry: Path, log: Path) -> ApiProcess:
        handle = open(log, "ab")  # noqa: SIM115 -- the child owns it; a restart appends
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "api", "--port", str(port),
             "--registry", str(registry)],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return cls(process, f"http://127.0.0.1:{port}", log)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"api exited:\n{self.tail()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"api not ready after {timeout} s:\n{self.tail()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    """Workers of one deployment (topic prefix) sharing a registry."""

    kafka: KafkaSettings
    env: dict[str, str]
    registry: Path
    root: Path
    ports: Any  # free_tcp_ports fixture
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def topics(self) -> TopicNames:
        return TopicNames.from_settings(self.kafka)

    def start(self, name: str, **extra_env: str) -> WorkerProcess:
        (port,) = self.ports(1)
        log = self.root / f"{name}-{len(self.workers)}.log"
        env = {
            **self.env,
            **TEST_ENV,
            "FRAUD_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
            "FRAUD_SCORING__REGISTRY": str(self.registry),
            "FRAUD_STREAM__STATE_DIR": str(self.root / "state"),
            **extra_env,
        }
        handle = open(log, "wb")  # noqa: SIM115 -- the child owns it for its lifetime
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fraudstream",
                "worker",
                "--instance",
                name,
                "--port",
                str(port),
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(name, process, port, log)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(30)


def read_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    expected: int,
    timeout: float = 180.0,
    quiet: float = 3.0,
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every committed record of ``topic`` (read_committed, from the start): waits until at least
    ``expected`` arrived and then ``quiet`` seconds more without a new one (to see duplicates)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"reader-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(5000, 0.5)
            for message in batch:
                assert message.error() is None, message.error()
                headers = {k: v for k, v in (message.headers() or [])}
                out.append((message.key(), message.value(), headers))
            if batch:
                last_new = time.monotonic()
            elif len(out) >= expected and time.monotonic() - last_new >= quiet:
                break
    finally:
        consumer.close()
    return out


def decisions_by_id(
    records: list[tuple[bytes | None, bytes, dict[str, bytes]]],
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Decision records by transaction id, and the ids decided more than once."""
    out: dict[str, dict[str, Any]] = {}
    twice: list[str] = []
    for _key, value, _headers in records:
        decision = orjson.loads(value)
        if decision["transaction_id"] in out:
            twice.append(decision["transaction_id"])
        out[decision["transaction_id"]] = decision
    return out, twice


def comparable(decision: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on how the stream ran: all but timings and measured CPU cost."""
    cost = {k: v for k, v in decision["cost"].items() if k != "compute_usd"}
    return {
        k: v for k, v in {**decision, "cost": cost}.items() if k not in ("latency_ms", "decided_at")
    }


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def produced(kafka: KafkaSettings, topic: str) -> int:
    """Records written to ``topic`` so far (end offsets; aborted ones and markers included)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**kafka.client_config(), "group.id": "offsets"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (AssertionError when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if line.split("{")[0].split(" ")[0] == name and all(
            found.get(k) == v for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")
