"""Shared fixtures. The Kafka ones start one real broker per test session (never a mock).

Tests that need Kafka are marked ``@pytest.mark.kafka`` and take one of:

* ``kafka_bootstrap`` -> "127.0.0.1:<port>" for clients (confluent-kafka, aiokafka, faust);
* ``kafka_settings``  -> a ``KafkaSettings`` whose ``bootstrap_servers`` is that broker, to hand to
  project code (it then treats the broker as an existing cluster and never starts/stops it);
* ``kafka_env``       -> environment variables that point a subprocess (worker, API, CLI) at it;
* ``free_tcp_ports``  -> ``free_tcp_ports(n)`` gives n free loopback ports (never 9092/9093 by
  design: the kernel picks them from the ephemeral range);
* ``topic_prefix``    -> a unique topic-name prefix per test, so tests share the broker without
  sharing topics.

With ``FRAUD_KAFKA__BOOTSTRAP_SERVERS`` set, the session uses that cluster and starts nothing.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from scoring.settings import KafkaSettings, Settings
from stream.local_kafka import LocalKafka

# The first start on a cold machine also fetches the jars with mvn.
BROKER_START_TIMEOUT = 180.0


@dataclass(frozen=True)
class KafkaTestBroker:
    """The session's broker."""

    bootstrap: str
    settings: KafkaSettings  # bootstrap_servers set: project code uses it as given
    local: LocalKafka | None  # None when the session uses an external cluster


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (the kernel picks them).

    All sockets stay bound until every port is chosen, so the same port is never returned twice.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def free_tcp_ports() -> Callable[[int], list[int]]:
    """``free_tcp_ports(n)``: n distinct free ports on 127.0.0.1 (for brokers, APIs, workers)."""
    return free_ports


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaTestBroker]:
    """One real Kafka for the whole session: a LocalKafka on free ports, or the external cluster."""
    base = Settings().kafka
    if base.bootstrap_servers:
        yield KafkaTestBroker(base.bootstrap_servers, base, None)
        return
    port, controller_port = free_ports(2)
    local_settings = base.model_copy(
        update={
            "local_port": port,
            "local_controller_port": controller_port,
            "local_dir": tmp_path_factory.mktemp("kafka"),
            # jar_cache stays the shared one: the jars are downloaded once per machine.
        }
    )
    broker = LocalKafka(local_settings)
    broker.up(timeout=BROKER_START_TIMEOUT)
    try:
        bootstrap = broker.bootstrap
        settings = local_settings.model_copy(update={"bootstrap_servers": bootstrap})
        yield KafkaTestBroker(bootstrap, settings, broker)
    finally:
        broker.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaTestBroker) -> str:
    """host:port of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: KafkaTestBroker) -> KafkaSettings:
    """KafkaSettings pointing at the session's broker (as an existing cluster)."""
    return kafka_broker.settings


@pytest.fixture(scope="session")
def kafka_env(kafka_broker: KafkaTestBroker) -> dict[str, str]:
    """os.environ plus FRAUD_KAFKA__BOOTSTRAP_SERVERS for subprocesses that must use the broker."""
    return {**os.environ, "FRAUD_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap}


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test uses, e.g. ``t3f9a1c2-test_per_key_order.``.

    Kafka topic names allow [a-zA-Z0-9._-] and 249 characters; the test name is only for humans.
    """
    readable = re.sub(r"[^a-zA-Z0-9_-]+", "-", request.node.name)[:60].strip("-")
    return f"t{uuid.uuid4().hex[:8]}-{readable}."
