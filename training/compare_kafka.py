"""Reading what ``fraudstream models compare`` needs from Kafka: the feature log's shadow
records, the transactions and the labels (``training`` may not import ``stream``; this reader,
like the trainer's, uses confluent-kafka directly).

Every partition of the three topics is read from ``since`` (Kafka time, a day earlier: producers'
clocks and event time differ; from the start without ``since``) up to its end as it was when
reading started, ``read_committed`` (the workers write the feature log in Kafka transactions; an
aborted batch was re-done and must not count twice). Nothing is committed: no consumer group is
joined.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException

from scoring.logs import LABEL_SCHEMA, TRANSACTION_SCHEMA
from scoring.settings import KafkaSettings
from scoring.wire import decode_labels, decode_transactions
from training.compare import ShadowLog
from training.trainer_kafka import FEATURE_LOG, LABELS, TRANSACTIONS

SLACK_MS = 86_400_000


@dataclass
class TopicData:
    log: ShadowLog
    transactions: pa.Table
    labels: pa.Table
    rejected: dict[str, int]
    seconds: float


def read_topics(
    kafka: KafkaSettings,
    *,
    since_ms: int | None = None,
    timeout_s: float = 600.0,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> TopicData:
    """Read the three topics up to their current ends (module docstring)."""
    from confluent_kafka import TopicPartition

    started = time.monotonic()
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": "fraudstream-models-compare",  # assign() only: never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        }
    )
    try:
        names = {kafka.topic(base): base for base in (TRANSACTIONS, FEATURE_LOG, LABELS)}
        metadata = consumer.list_topics(timeout=30)
        wanted = []
        for topic in names:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                raise RuntimeError(f"topic {topic} does not exist")
            start = OFFSET_BEGINNING if since_ms is None else max(since_ms - SLACK_MS, 0)
            wanted += [TopicPartition(topic, p, start) for p in sorted(described.partitions)]
        if since_ms is not None:
            found = consumer.offsets_for_times(wanted, timeout=30)
            wanted = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in found
            ]
        # The end of each partition now: records produced while reading are not waited for.
        ends: dict[tuple[str, int], int] = {}
        pending: set[tuple[str, int]] = set()
        for tp in wanted:
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            key = (tp.topic, tp.partition)
            ends[key] = high
            first = low if tp.offset == OFFSET_BEGINNING else tp.offset
            if tp.offset != OFFSET_END and first < high:
                pending.add(key)
        consumer.assign(wanted)
        log = ShadowLog()
        tx_tables: list[pa.Table] = []
        label_tables: list[pa.Table] = []
        rejected = {TRANSACTIONS: 0, LABELS: 0}
        while pending:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"still reading {sorted(pending)} after {timeout_s:g} s")
            messages = consumer.consume(10_000, 0.5)
            groups: dict[tuple[str, int], list[bytes]] = {}
            for message in messages:
                key = (message.topic() or "", message.partition() or 0)
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)  # read_committed: the end is the stable offset
                        continue
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                groups.setdefault(key, []).append(message.value() or b"")
                if (message.offset() or 0) >= ends[key] - 1:
                    pending.discard(key)
            for (topic, partition), values in groups.items():
                base = names[topic]
                if base == FEATURE_LOG:
                    log.add(values, partition)
                elif base == TRANSACTIONS:
                    table, _positions, bad = decode_transactions(values)
                    tx_tables.append(table)
                    rejected[TRANSACTIONS] += len(bad)
                else:
                    table, _positions, bad = decode_labels(values)
                    label_tables.append(table.filter(table.column("is_fraud")))
                    rejected[LABELS] += len(bad)
            on_progress(len(messages))
    finally:
        consumer.close()
    return TopicData(
        log=log,
        transactions=_concat(tx_tables, TRANSACTION_SCHEMA),
        labels=_concat(label_tables, LABEL_SCHEMA),
        rejected={**rejected, FEATURE_LOG: log.rejected},
        seconds=time.monotonic() - started,
    )


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)
