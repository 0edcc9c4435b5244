"""A transaction call that stalls replaces the producer, and the replacement fences the stalled
transaction: its records reached the broker but are never committed (stream/transactional.py).

The stall is made on purpose by a producer subclass whose first ``commit_transaction`` never
answers, against the session's real broker; tests/integration/test_backpressure.py meets the real
thing (a SIGSTOPped broker)."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer

from stream.transactional import TransactionalProducer, TransactionStalledError
from tests.integration.test_kafka_broker import consume, make_topic

if TYPE_CHECKING:
    from conftest import KafkaTestBroker

pytestmark = pytest.mark.kafka


class _HangsOnFirstCommit(Producer):  # type: ignore[misc]
    """The first producer made hangs in commit_transaction (after its records were delivered),
    until the test releases it; the ones made after it are plain producers."""

    made = 0
    release = threading.Event()

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        type(self).made += 1
        self.hangs = type(self).made == 1

    def commit_transaction(self, *args: Any) -> None:
        if self.hangs:
            self.flush(10)
            type(self).release.wait(60)
            return
        super().commit_transaction(*args)


def test_a_stalled_commit_replaces_the_producer_and_the_stalled_transaction_never_commits(
    kafka_broker: KafkaTestBroker, topic_prefix: str
) -> None:
    topic = make_topic(kafka_broker.settings, f"{topic_prefix}out", partitions=1)
    stalls: list[tuple[str, str]] = []
    producer = TransactionalProducer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "transactional.id": f"test-{uuid.uuid4().hex[:8]}",
            "linger.ms": 0,
        },
        keep_waiting=lambda: True,
        on_stall=lambda what, why: stalls.append((what, why)),
        call_timeout_s=2.0,
        grace_s=1.0,
        client=_HangsOnFirstCommit,
    )
    try:
        producer.start()
        producer.begin()
        producer.produce(topic, [(b"k", b"stalled-%d" % i, []) for i in range(5)])
        with pytest.raises(TransactionStalledError, match="committing"):
            producer.commit([], None)
        assert [what for what, _ in stalls] == ["committing"]
        assert _HangsOnFirstCommit.made == 2  # replaced

        producer.begin()
        producer.produce(topic, [(b"k", b"redone-%d" % i, []) for i in range(5)])
        producer.commit([], None)
    finally:
        _HangsOnFirstCommit.release.set()
        producer.flush(10)

    # The stalled records were written to the log: a read_uncommitted reader sees all ten.
    uncommitted = {"isolation.level": "read_uncommitted"}
    everything = consume(kafka_broker.bootstrap, topic, 10, **uncommitted)
    assert sorted(m.value() for m in everything) == sorted(
        [b"redone-%d" % i for i in range(5)] + [b"stalled-%d" % i for i in range(5)]
    )
    # ...but only the redone transaction committed.
    committed = consume(kafka_broker.bootstrap, topic, 5, **{"isolation.level": "read_committed"})
    assert [m.value() for m in committed] == [b"redone-%d" % i for i in range(5)]
