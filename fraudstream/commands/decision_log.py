"""Every committed decision of a run, read back from ``decisions`` on a background thread.

The live view takes its throughput, decision mix and decision latencies from here (what a bank
reading the topic sees), and ``demo`` its checks: each transaction decided exactly once, the
scores against the offline replay, the API's answers against the stream's records. It reads with
``isolation.level=read_committed`` from the beginning of every partition, without a consumer group.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import orjson

from scoring.settings import KafkaSettings


@dataclass(frozen=True)
class Seen:
    """One decision as the live view needs it."""

    at: float  # monotonic time it was read
    latency_ms: float
    action: str
    degraded: bool


@dataclass
class DecisionLog:
    kafka: KafkaSettings
    topic: str
    keep: bool  # keep every record (demo's checks); ``up`` only counts
    count: int = 0
    by_key: dict[tuple[str, str], bytes] = field(default_factory=dict)
    twice: list[tuple[str, str]] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    recent: deque[Seen] = field(default_factory=lambda: deque(maxlen=200_000))
    error: BaseException | None = None
    first_at: float = 0.0  # monotonic time of the first decision read
    last_at: float = 0.0  # and of the latest
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def window(self, seconds: float) -> list[Seen]:
        since = time.monotonic() - seconds
        return [seen for seen in list(self.recent) if seen.at >= since]

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"fraudstream-run-reader-{time.time_ns()}",  # never committed
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        try:
            partitions = consumer.list_topics(self.topic, timeout=30).topics[self.topic].partitions
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                for message in consumer.consume(5000, 0.2):
                    value = message.value()
                    if message.error() is None and value is not None:
                        self._add(value)
        except BaseException as exc:  # shown by the run, which then stops
            self.error = exc
        finally:
            consumer.close()

    def _add(self, value: bytes) -> None:
        decision = orjson.loads(value)
        key = (decision.get("bank_id") or "", decision["transaction_id"])
        self.count += 1
        self.last_at = time.monotonic()
        if self.count == 1:
            self.first_at = self.last_at
        self.actions[decision["action"]] += 1
        self.recent.append(
            Seen(time.monotonic(), decision["latency_ms"], decision["action"], decision["degraded"])
        )
        if self.keep:
            if key in self.by_key:
                self.twice.append(key)
            self.by_key[key] = value
