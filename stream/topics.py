"""The service's Kafka topics (DESIGN.md §3): their names, shapes, and an idempotent creator.

Import the names from here rather than spelling strings::

    from stream.topics import TopicNames
    names = TopicNames.from_settings(settings.kafka)   # prefix applied
    producer.produce(names.transactions, key=card_id, value=...)

Creation never changes a topic that already exists: more partitions would remap keys to partitions
and split a card's history (and its partitioned state) in two, so a mismatch is only reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from scoring.settings import KafkaSettings, get_settings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

# Base names; the deployment's prefix is prepended by topic_name() / TopicNames.
TRANSACTIONS = "transactions"
DECISIONS = "decisions"
FEATURE_LOG = "feature-log"
LABELS = "labels"
MODEL_UPDATES = "model-updates"
TRANSACTIONS_DLQ = "transactions-dlq"
ALL_TOPICS: tuple[str, ...] = (
    TRANSACTIONS,
    DECISIONS,
    FEATURE_LOG,
    LABELS,
    MODEL_UPDATES,
    TRANSACTIONS_DLQ,
)

# librdkafka's default partitioner (CRC32 "consistent_random") sends a key to a different partition
# than Java clients and aiokafka (murmur2), so faust and a confluent-kafka producer would split one
# card over two partitions. Every confluent-kafka producer of keyed records sets this.
PRODUCER_PARTITIONER = "murmur2_random"

# -1 asks for the broker's default.replication.factor: 1 locally, the operator's choice elsewhere.
BROKER_DEFAULT_REPLICATION = -1
_COMPACTED = MappingProxyType({"cleanup.policy": "compact"})
_KEEP_30_DAYS = MappingProxyType({"retention.ms": str(30 * 24 * 3600 * 1000)})


def topic_name(base: str, kafka: KafkaSettings | None = None) -> str:
    """The full topic name for ``base`` (one of the constants above) with the configured prefix."""
    return (kafka or get_settings().kafka).topic(base)


@dataclass(frozen=True)
class TopicNames:
    """Every topic's full name for one deployment."""

    transactions: str
    decisions: str
    feature_log: str
    labels: str
    model_updates: str
    transactions_dlq: str

    @classmethod
    def from_settings(cls, kafka: KafkaSettings | None = None) -> TopicNames:
        kafka = kafka or get_settings().kafka
        return cls(
            transactions=kafka.topic(TRANSACTIONS),
            decisions=kafka.topic(DECISIONS),
            feature_log=kafka.topic(FEATURE_LOG),
            labels=kafka.topic(LABELS),
            model_updates=kafka.topic(MODEL_UPDATES),
            transactions_dlq=kafka.topic(TRANSACTIONS_DLQ),
        )


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is created."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def topic_specs(kafka: KafkaSettings | None = None) -> list[TopicSpec]:
    """The DESIGN.md §3 topics for these settings."""
    kafka = kafka or get_settings().kafka
    data = kafka.partitions
    return [
        TopicSpec(kafka.topic(TRANSACTIONS), data),
        TopicSpec(kafka.topic(DECISIONS), data),
        TopicSpec(kafka.topic(FEATURE_LOG), data),
        TopicSpec(kafka.topic(LABELS), data),
        # Every worker and API replica reads all announcements; one partition keeps them in one
        # order, and compaction keeps the latest per model name for replicas that start later.
        TopicSpec(kafka.topic(MODEL_UPDATES), 1, _COMPACTED),
        # Operators inspect and replay the DLQ by hand; a week (the default) is short for that.
        TopicSpec(kafka.topic(TRANSACTIONS_DLQ), data, _KEEP_30_DAYS),
    ]


@dataclass(frozen=True)
class TopicResult:
    """What create_topics did for one topic."""

    name: str
    created: bool  # False: it existed already (left untouched)
    partitions: int  # partitions the topic has now
    wanted_partitions: int

    @property
    def mismatch(self) -> bool:
        return self.partitions != self.wanted_partitions


def create_topics(
    kafka: KafkaSettings | None = None,
    specs: Sequence[TopicSpec] | None = None,
    timeout: float = 30.0,
) -> list[TopicResult]:
    """Create the topics that do not exist yet and wait until every partition has a leader.

    Idempotent: existing topics are reported, never altered. Raises
    ``confluent_kafka.KafkaException`` when the cluster refuses or does not answer in ``timeout`` s.
    """
    from confluent_kafka.admin import AdminClient

    kafka = kafka or get_settings().kafka
    specs = list(specs if specs is not None else topic_specs(kafka))
    admin = AdminClient(kafka.client_config())
    created = _create_missing(admin, specs, timeout)
    partitions = wait_for_topics(admin, [s.name for s in specs], timeout)
    return [TopicResult(s.name, s.name in created, partitions[s.name], s.partitions) for s in specs]


def _create_missing(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> set[str]:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return set()
    new_topics = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=BROKER_DEFAULT_REPLICATION,
            config=dict(s.config),
        )
        for s in missing
    ]
    futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
    created = set()
    for name, future in futures.items():
        try:
            future.result()
            created.add(name)
        except KafkaException as exc:
            # Another process created it between our listing and our request: that is fine.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def wait_for_topics(admin: AdminClient, names: Iterable[str], timeout: float) -> dict[str, int]:
    """Wait until each topic is in metadata with a leader on every partition; return counts.

    A freshly created topic is briefly unknown to the broker's metadata cache, and producing to it
    then fails with UNKNOWN_TOPIC_OR_PART; callers (tests, replay) expect to produce right away.
    """
    from confluent_kafka import KafkaError, KafkaException

    wanted = list(names)
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 1.0))
        ready = {}
        for name in wanted:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                continue
            if all(p.leader >= 0 for p in topic.partitions.values()):
                ready[name] = len(topic.partitions)
        if len(ready) == len(wanted):
            return ready
        if time.monotonic() >= deadline:
            late = sorted(set(wanted) - set(ready))
            message = f"topics without leaders after {timeout} s: {late}"
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, message))
        time.sleep(0.1)
