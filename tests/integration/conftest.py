"""Fixtures of the integration tests that run real services against the session's broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scoring.settings import KafkaSettings
from stream.topics import create_topics
from tests.integration.stream_harness import Stack


@pytest.fixture
def stack_factory(
    kafka_settings: KafkaSettings,
    kafka_env: dict[str, str],
    topic_prefix: str,
    tmp_path: Path,
    free_tcp_ports: Callable[[int], list[int]],
) -> Iterator[Callable[[Path], Stack]]:
    """``stack_factory(registry_dir)``: a deployment on fresh topics (3 partitions) of this test,
    whose services serve models from ``registry_dir``; every process it started is stopped after
    the test."""
    stacks: list[Stack] = []

    def make(registry_dir: Path) -> Stack:
        kafka = kafka_settings.model_copy(update={"topic_prefix": topic_prefix, "partitions": 3})
        create_topics(kafka)
        stack = Stack(kafka, kafka_env, registry_dir, tmp_path, free_tcp_ports)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
