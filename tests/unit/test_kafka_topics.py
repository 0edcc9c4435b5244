"""Topic names and specs (DESIGN.md §3) without a broker; creation runs against the real one."""

from __future__ import annotations

from scoring.settings import KafkaSettings
from stream.topics import (
    ALL_TOPICS,
    MODEL_UPDATES,
    TRANSACTIONS,
    TopicNames,
    topic_name,
    topic_specs,
)


def test_names_carry_the_prefix() -> None:
    kafka = KafkaSettings(topic_prefix="bank1.")
    names = TopicNames.from_settings(kafka)
    assert names.transactions == "bank1.transactions"
    assert names.transactions_dlq == "bank1.transactions-dlq"
    assert names.feature_log == "bank1.feature-log"
    assert topic_name(MODEL_UPDATES, kafka) == "bank1.model-updates"


def test_specs_cover_every_topic_with_configured_partitions() -> None:
    kafka = KafkaSettings(topic_prefix="p-", partitions=6)
    specs = {spec.name: spec for spec in topic_specs(kafka)}
    assert set(specs) == {f"p-{base}" for base in ALL_TOPICS}
    assert specs[f"p-{TRANSACTIONS}"].partitions == 6
    updates = specs[f"p-{MODEL_UPDATES}"]
    assert updates.partitions == 1
    assert updates.config["cleanup.policy"] == "compact"
