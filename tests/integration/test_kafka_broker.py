"""The session broker is real Kafka and does what the stream needs: per-key order, the aiokafka
client (faust's), one partitioner across both clients, and transactions (exactly-once)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from scoring.settings import KafkaSettings
from stream.topics import PRODUCER_PARTITIONER, TopicSpec, create_topics

if TYPE_CHECKING:
    from conftest import KafkaTestBroker

pytestmark = pytest.mark.kafka

KEYS = [f"card-{i}" for i in range(8)]
PER_KEY = 150


def make_topic(kafka: KafkaSettings, name: str, partitions: int = 3) -> str:
    create_topics(kafka, [TopicSpec(name, partitions)])
    return name


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0, **conf: Any) -> list:
    """Read ``count`` messages from the beginning of ``topic`` with a fresh consumer group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(messages)} of {count} messages within {timeout} s"
            for msg in consumer.consume(num_messages=500, timeout=min(1.0, remaining)):
                if msg.error():
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    continue
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    """Send a raw ApiVersions v0 request: only a real Kafka broker answers it this way.

    Request: size, api_key=18, api_version=0, correlation_id, client_id. Response: size,
    correlation_id, error_code, [api_key, min_version, max_version].
    """
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    client_id = b"fraudstream-test"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    correlation_id, error_code, count = struct.unpack(">ihi", payload[:10])
    assert (correlation_id, error_code) == (7, 0)
    entries = struct.iter_unpack(">hhh", payload[10 : 10 + 6 * count])
    return {key: (low, high) for key, low, high in entries}


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "broker closed the connection"
        data += chunk
    return data


def test_metadata_lists_broker_and_it_is_real_kafka(kafka_broker: KafkaTestBroker) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    metadata = admin.list_topics(timeout=10)
    cluster = admin.describe_cluster(request_timeout=10).result()
    assert metadata.brokers
    assert cluster.cluster_id == metadata.cluster_id
    assert len(cluster.cluster_id) == 22  # KRaft cluster ids are 16 bytes in base64url

    versions = api_versions(kafka_broker.bootstrap)
    # Produce, Fetch, Metadata, InitProducerId (transactions), DescribeCluster
    assert {0, 1, 3, 22, 60} <= set(versions)
    assert versions[0][1] >= 9  # Kafka ≥ 2.4 speaks Produce v9+

    if kafka_broker.local is not None:
        assert set(metadata.brokers) == {1}
        broker = metadata.brokers[1]
        assert f"{broker.host}:{broker.port}" == kafka_broker.bootstrap
        assert cluster.cluster_id == kafka_broker.local.cluster_id()
        resource = ConfigResource(ConfigResource.Type.BROKER, "1")
        configs = admin.describe_configs([resource])[resource].result()
        assert configs["process.roles"].value == "broker,controller"  # KRaft, no ZooKeeper
        assert configs["offsets.topic.num.partitions"].value == "1"


def test_three_partitions_keep_per_key_order(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    topic = make_topic(kafka_settings, f"{topic_prefix}orders", partitions=3)
    producer = Producer(
        {
            "bootstrap.servers": kafka_settings.effective_bootstrap(),
            "enable.idempotence": True,  # retries cannot reorder or duplicate
            "linger.ms": 5,
        }
    )
    for seq in range(PER_KEY):  # interleaved: k0 0, k1 0, ..., k0 1, k1 1, ...
        for key in KEYS:
            producer.produce(topic, key=key, value=str(seq))
        producer.poll(0)
    assert producer.flush(30) == 0

    messages = consume(kafka_settings.effective_bootstrap(), topic, len(KEYS) * PER_KEY)
    values: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for msg in messages:
        key = msg.key().decode()
        values[key].append(int(msg.value()))
        partitions[key].add(msg.partition())
    assert len(messages) == len(KEYS) * PER_KEY
    for key in KEYS:
        assert values[key] == list(range(PER_KEY)), f"{key} out of order"
        assert len(partitions[key]) == 1, f"{key} spread over {partitions[key]}"
    assert len(set().union(*partitions.values())) > 1, "keys should spread over partitions"


async def _aiokafka_roundtrip(bootstrap: str, topic: str) -> tuple[dict[str, int], list]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        partition_of = {}
        for seq in range(20):
            for key in KEYS:
                value = str(seq).encode()
                meta = await producer.send_and_wait(topic, key=key.encode(), value=value)
                partition_of[key] = meta.partition
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list = []
    try:
        async with asyncio.timeout(30):
            while len(received) < 20 * len(KEYS):
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.extend(records)
    finally:
        await consumer.stop()
    return partition_of, received


def test_aiokafka_produces_and_consumes(kafka_settings: KafkaSettings, topic_prefix: str) -> None:
    topic = make_topic(kafka_settings, f"{topic_prefix}aio", partitions=3)
    partition_of, received = asyncio.run(
        _aiokafka_roundtrip(kafka_settings.effective_bootstrap(), topic)
    )
    assert len(received) == 20 * len(KEYS)
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in received:
        by_key[record.key.decode()].append(int(record.value))
        assert record.partition == partition_of[record.key.decode()]
    assert all(by_key[key] == list(range(20)) for key in KEYS)


def test_confluent_murmur2_matches_aiokafka_partitioner(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    """librdkafka's default partitioner (CRC32) differs from Java's and aiokafka's (murmur2).

    A producer that feeds the faust workers must set ``partitioner=murmur2_random`` or one card's
    events land on different partitions depending on which client wrote them.
    """
    topic = make_topic(kafka_settings, f"{topic_prefix}part", partitions=3)
    bootstrap = kafka_settings.effective_bootstrap()
    aio_partition, _ = asyncio.run(_aiokafka_roundtrip(bootstrap, topic))
    delivered: dict[str, int] = {}

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered[msg.key().decode()] = msg.partition()

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": PRODUCER_PARTITIONER})
    for key in KEYS:
        producer.produce(topic, key=key, value=b"x", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert delivered == aio_partition


def test_transactions_and_read_committed(kafka_settings: KafkaSettings, topic_prefix: str) -> None:
    bootstrap = kafka_settings.effective_bootstrap()
    topic = make_topic(kafka_settings, f"{topic_prefix}txn", partitions=3)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"{topic_prefix}producer"}
    )
    producer.init_transactions(30)
    for batch, commit in (("a", True), ("b", False), ("c", True)):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, key=f"k{i}", value=f"{batch}{i}")
        # Flush first: abort_transaction drops messages still queued in the client, and the
        # test is about the broker hiding aborted records that it did receive.
        assert producer.flush(30) == 0
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    committed = consume(bootstrap, topic, 10, **{"isolation.level": "read_committed"})
    assert sorted(m.value().decode() for m in committed) == [
        f"{b}{i}" for b in "ac" for i in range(5)
    ]
    # read_uncommitted sees the aborted batch too: the isolation above is the broker's doing.
    everything = consume(bootstrap, topic, 15, **{"isolation.level": "read_uncommitted"})
    assert sum(m.value().decode().startswith("b") for m in everything) == 5


def test_consume_transform_produce_commits_offsets_in_the_transaction(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    """The exactly-once loop: output records and input offsets commit atomically."""
    bootstrap = kafka_settings.effective_bootstrap()
    source = make_topic(kafka_settings, f"{topic_prefix}in", partitions=3)
    sink = make_topic(kafka_settings, f"{topic_prefix}out", partitions=3)
    feeder = Producer({"bootstrap.servers": bootstrap})
    for i in range(30):
        feeder.produce(source, key=f"k{i % 4}", value=str(i))
    assert feeder.flush(30) == 0

    group = f"{topic_prefix}eos"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": group})
    producer.init_transactions(30)
    consumer.subscribe([source])
    seen = 0
    deadline = time.monotonic() + 30
    try:
        while seen < 30:
            assert time.monotonic() < deadline, f"stalled after {seen} of 30 messages"
            batch = [m for m in consumer.consume(100, timeout=0.5) if not m.error()]
            if not batch:
                continue
            producer.begin_transaction()
            for msg in batch:
                producer.produce(sink, key=msg.key(), value=b"seen:" + msg.value())
            # Partitions not read yet have no position (negative offset): nothing to commit.
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            seen += len(batch)
        committed = consumer.committed(consumer.assignment(), timeout=10)
    finally:
        consumer.close()
    assert sum(tp.offset for tp in committed if tp.offset >= 0) == 30
    out = consume(bootstrap, sink, 30, **{"isolation.level": "read_committed"})
    assert sorted(int(m.value().decode().split(":")[1]) for m in out) == list(range(30))
