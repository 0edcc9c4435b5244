"""`fraudstream models promote / rollback` announce on `model-updates`, against the real broker."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from click.testing import Result
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from fraudstream.cli import app
from fraudstream.commands import models as models_command
from scoring.registry import ModelManifest, ModelRegistry
from scoring.settings import KafkaSettings, get_settings
from stream.announce import AnnouncementError, read_announcements
from stream.topics import TopicNames, create_topics

pytestmark = pytest.mark.kafka

MODELS_DIR = Path(__file__).parents[1] / "models"
SINGLE_TREE = MODELS_DIR / "single_tree.txt"  # 4 features, Column_0..3 (as in test_registry.py)
FEATURES = ["amount", "card_tx_count_1h", "seconds_since_prev", "merchant_fraud_rate"]
UNREACHABLE = "127.0.0.1:1"


@pytest.fixture
def kafka(kafka_settings: KafkaSettings, topic_prefix: str) -> KafkaSettings:
    """The session broker with this test's own topics, created."""
    settings = kafka_settings.model_copy(update={"topic_prefix": topic_prefix})
    create_topics(settings)
    return settings


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", cache_dir=tmp_path / "cache")


@pytest.fixture
def versions(registry: ModelRegistry) -> list[ModelManifest]:
    return [
        registry.register(SINGLE_TREE, feature_names=FEATURES, metrics={"auc": auc})
        for auc in (0.8, 0.9)
    ]


def cli(kafka: KafkaSettings, registry: ModelRegistry, *args: str) -> Result:
    env = {
        "FRAUD_KAFKA__BOOTSTRAP_SERVERS": kafka.effective_bootstrap(),
        "FRAUD_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
    }
    get_settings.cache_clear()  # the CLI reads the environment through the cached settings
    try:
        return CliRunner().invoke(
            app, ["models", *args, "--registry", registry.storage.describe()], env=env
        )
    finally:
        get_settings.cache_clear()


def one_line(text: str) -> str:
    """Rich wraps long messages at the terminal width (80 under CliRunner)."""
    return " ".join(text.split())


def record_keys(kafka: KafkaSettings) -> list[bytes | None]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = TopicNames.from_settings(kafka).model_updates
    consumer = Consumer({**kafka.client_config(), "group.id": "test-keys"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        keys: list[bytes | None] = []
        while len(keys) < high:
            message = consumer.poll(10)
            assert message is not None and message.error() is None
            keys.append(message.key())
        return keys
    finally:
        consumer.close()


def test_promote_and_rollback_are_announced(
    kafka: KafkaSettings, registry: ModelRegistry, versions: list[ModelManifest]
) -> None:
    first, second = versions
    topic = TopicNames.from_settings(kafka).model_updates

    promoted = cli(kafka, registry, "promote", first.version)
    assert promoted.exit_code == 0, promoted.output
    assert topic in one_line(promoted.stderr)
    [announced] = read_announcements(kafka, timeout_s=10)
    assert announced.alias == "champion"
    assert announced.version == first.version
    assert announced.manifest_digest == first.digest()
    assert announced.previous_version is None
    assert announced.registry == registry.storage.describe()

    assert cli(kafka, registry, "promote", second.version).exit_code == 0
    assert cli(kafka, registry, "rollback").exit_code == 0
    history = read_announcements(kafka, timeout_s=10)
    assert [(a.version, a.previous_version) for a in history] == [
        (first.version, None),
        (second.version, first.version),
        (first.version, second.version),
    ]
    assert [a.manifest_digest for a in history] == [
        first.digest(),
        second.digest(),
        first.digest(),
    ]
    assert record_keys(kafka) == [b"champion"] * 3  # the compaction key

    challenger = cli(kafka, registry, "promote", second.version, "--alias", "challenger")
    assert challenger.exit_code == 0, challenger.output
    latest = read_announcements(kafka, timeout_s=10)[-1]
    assert (latest.alias, latest.version) == ("challenger", second.version)
    assert record_keys(kafka)[-1] == b"challenger"


def test_no_announce_publishes_nothing(
    kafka: KafkaSettings, registry: ModelRegistry, versions: list[ModelManifest]
) -> None:
    first, second = versions
    assert cli(kafka, registry, "promote", first.version, "--no-announce").exit_code == 0
    assert cli(kafka, registry, "promote", second.version, "--no-announce").exit_code == 0
    rolled = cli(kafka, registry, "rollback", "--no-announce")
    assert rolled.exit_code == 0, rolled.output
    assert "not announced" in rolled.stderr
    assert registry.resolve("champion") == first.version
    assert read_announcements(kafka, timeout_s=10) == []


def test_unreachable_broker_fails_but_the_alias_moves(
    kafka: KafkaSettings,
    registry: ModelRegistry,
    versions: list[ModelManifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = versions
    monkeypatch.setattr(models_command, "ANNOUNCE_TIMEOUT_S", 2.0)
    down = kafka.model_copy(update={"bootstrap_servers": UNREACHABLE})
    topic = TopicNames.from_settings(down).model_updates

    result = cli(down, registry, "promote", first.version)
    assert result.exit_code == 1, result.output
    message = one_line(result.stderr)
    assert f"champion → {first.version} in the registry" in message
    assert f"the announcement on {topic} failed" in message
    assert "running services will pick it up when they restart" in message
    assert "Connection refused" in message  # the client's own error is quoted
    assert "Traceback" not in result.output
    assert registry.resolve("champion") == first.version

    assert cli(kafka, registry, "promote", second.version, "--no-announce").exit_code == 0
    result = cli(down, registry, "rollback")
    assert result.exit_code == 1 and "failed" in result.stderr
    assert registry.resolve("champion") == first.version
    # nothing reached the real topic either
    assert read_announcements(kafka, timeout_s=10) == []


def test_a_missing_topic_is_reported_not_created(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    registry: ModelRegistry,
    versions: list[ModelManifest],
) -> None:
    """The broker auto-creates topics; a model-updates made that way would not be compacted."""
    kafka = kafka_settings.model_copy(update={"topic_prefix": topic_prefix})  # no create_topics
    topic = TopicNames.from_settings(kafka).model_updates
    result = cli(kafka, registry, "promote", versions[0].version)
    assert result.exit_code == 1, result.output
    message = one_line(result.stderr)
    assert f"the announcement on {topic} failed" in message and "does not exist" in message
    assert "fraudstream kafka topics" in message
    assert registry.resolve("champion") == versions[0].version
    assert topic not in AdminClient(kafka.client_config()).list_topics(timeout=10).topics


def test_undecodable_records_are_skipped_and_logged(
    kafka: KafkaSettings,
    registry: ModelRegistry,
    versions: list[ModelManifest],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = TopicNames.from_settings(kafka).model_updates
    producer = Producer(kafka.client_config())
    producer.produce(topic, key=b"champion", value=b"not json", partition=0)
    producer.produce(topic, key=b"champion", value=b'{"alias": "champion"}', partition=0)
    assert producer.flush(10) == 0
    del producer  # no reconnect attempts (and their stderr lines) after the broker stops
    assert cli(kafka, registry, "promote", versions[0].version).exit_code == 0

    with caplog.at_level(logging.WARNING, logger="fraudstream.announce"):
        announcements = read_announcements(kafka, timeout_s=10)
    assert [a.version for a in announcements] == [versions[0].version]
    skipped = [r.getMessage() for r in caplog.records if r.name == "fraudstream.announce"]
    assert len(skipped) == 2
    assert "not JSON" in skipped[0] and "manifest_digest" in skipped[1]


def test_reading_a_topic_that_does_not_exist_fails_clearly(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    missing = kafka_settings.model_copy(update={"topic_prefix": topic_prefix})  # not created
    topic = TopicNames.from_settings(missing).model_updates
    with pytest.raises(AnnouncementError, match=re.escape(topic)):
        read_announcements(missing, timeout_s=5)
