"""A replica's read-back of ``decisions`` at start, against the real broker (api/stream_link.py).

``/readyz`` must not say ready before every partition has been read to its end: partition 2 holds
a backlog of decisions while partition 0 gets live ones. A replica that said ready at the first
recent record (as it once did) would not know the backlog's last decisions yet, and a bank's
resend of one of them after the replica restarted would be taken for a new transaction and
decided twice.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import cast

import orjson
import pytest

from api.hub import AnalystVerdict, DecisionHub, StreamDecision
from api.stream_link import KafkaLink
from scoring.settings import KafkaSettings
from stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BACKLOG = 40_000  # ~20 MB on one partition: dozens of fetches of at most 1 MB per partition


class RecordingHub:
    """What the link hands over, in order (the DecisionHub's two entry points)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def on_stream_decisions(self, decisions: list[StreamDecision]) -> None:
        self.ids.update(d.transaction_id for d in decisions)

    def on_analyst_verdicts(self, _verdicts: list[AnalystVerdict]) -> None:
        pass


def _decision(tx_id: str) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": tx_id,
            "bank_id": "bank01",
            "action": "approve",
            "decided_at": "2026-11-23T10:00:00.000Z",
            "score": 0.01,
            "reasons": ["a long enough reason to make each record a few hundred bytes" * 6],
        }
    )


def test_ready_only_once_every_partition_is_read_to_its_end(kafka_settings: KafkaSettings) -> None:
    from confluent_kafka import Producer

    kafka = kafka_settings.model_copy(
        update={"topic_prefix": f"t{uuid.uuid4().hex[:8]}-rb.", "partitions": 3}
    )
    create_topics(kafka)
    topic = kafka.topic("decisions")
    producer = Producer({**kafka.client_config(), "linger.ms": 20})
    for i in range(BACKLOG):
        producer.produce(topic, value=_decision(f"backlog-{i}"), partition=2)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    live_stop = threading.Event()

    def live() -> None:  # a worker deciding live traffic meanwhile, on partition 0 only
        i = 0
        while not live_stop.wait(0.01):
            producer.produce(topic, value=_decision(f"live-{i}"), partition=0)
            producer.poll(0)
            i += 1
        producer.flush(10)

    feeder = threading.Thread(target=live, daemon=True)
    feeder.start()

    async def known_when_ready() -> tuple[set[str], float]:
        hub = RecordingHub()
        link = KafkaLink(kafka, lookback_s=3600, isolation="read_uncommitted")
        link.start(asyncio.get_running_loop(), cast(DecisionHub, hub))
        started = asyncio.get_running_loop().time()
        try:
            while not link.status()[0]:
                assert asyncio.get_running_loop().time() - started < 120, link.status()
                await asyncio.sleep(0.002)
            await asyncio.sleep(0)  # what the consumer handed over before it said caught up
            return set(hub.ids), asyncio.get_running_loop().time() - started
        finally:
            link.close()

    try:
        known, took = asyncio.run(known_when_ready())
    finally:
        live_stop.set()
        feeder.join(15)
    backlog = sum(1 for i in known if i.startswith("backlog-"))
    print(f"\nready after {took:.2f} s knowing {backlog:,} of {BACKLOG:,} backlog decisions")
    assert backlog == BACKLOG
    assert any(i.startswith("live-") for i in known)
