"""``fraudstream demo``: the main job on one machine, start to finish, with a summary.

Today it runs: the local Kafka (or the configured cluster) → topics → a simulated month of traffic
→ a model trained on the first weeks (labels as the bank knew them) → the last week scored offline
and evaluated → that week replayed into Kafka and read back. Every process it starts, it stops.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraudstream.commands.common import console, fail, steps

if TYPE_CHECKING:
    from scoring.settings import KafkaSettings


def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where data and models go (default: runs/demo-<time>).")
    ] = None,
    days: Annotated[int, typer.Option(min=14, help="Simulated days.")] = 28,
    cards: Annotated[int, typer.Option(min=100, help="Simulated cards.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of simulation and training.")] = 7,
    keep_kafka: Annotated[bool, typer.Option(help="Leave the local broker running.")] = False,
) -> None:
    """Run the whole local pipeline on a short simulated workload and print a summary."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from scoring.decision import policy_from
    from scoring.logs import TIMESTAMP, write_log
    from scoring.registry import ModelRegistry
    from scoring.settings import get_settings
    from stream.local_kafka import LocalKafka, LocalKafkaError
    from stream.replay import replay
    from stream.topics import TopicNames, create_topics
    from training.evaluate import evaluate
    from training.offline import score_log
    from training.simulator import SimulationConfig, simulate
    from training.train import train_and_register

    settings = get_settings()
    workdir = workdir or Path("runs") / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalKafka(settings.kafka)
    started_broker = False
    summary: dict[str, str] = {}
    began = time.monotonic()
    try:
        with steps() as progress:
            task = progress.add_task("starting Kafka")

            def step(text: str) -> None:
                progress.update(task, description=text)

            was_running = broker.external or broker.find_pid() is not None
            status = broker.up(progress=step)
            started_broker = not was_running
            step("creating topics")
            create_topics(settings.kafka)
            summary["kafka"] = f"{status.bootstrap} ({'external' if status.external else 'local'})"

            step(f"simulating {days} days of {cards:,} cards")
            config = SimulationConfig(days=days, cards=cards, seed=seed)
            transactions, labels = simulate(config)
            write_log(transactions, workdir / "transactions.parquet")
            write_log(labels, workdir / "labels.parquet")
            fraud = pc.sum(pc.cast(labels["is_fraud"], pa.int64())).as_py()
            summary["transactions"] = f"{transactions.num_rows:,} ({fraud:,} fraud)"

            start = config.start
            test_from = start + timedelta(days=days - 7)
            # What the bank knew when it trained: labels reported before the test week.
            known = labels.filter(pc.less(labels["reported_at"], pa.scalar(test_from, TIMESTAMP)))
            registry = ModelRegistry(workdir / "registry")
            manifest = train_and_register(
                transactions, known, registry=registry, seed=seed,
                start=start + timedelta(days=7), until=test_from, on_step=step,
            )  # fmt: skip
            registry.promote(manifest.version)
            model = registry.load("champion")
            summary["model"] = f"{manifest.version} ({model.scorer.engine})"

            step("scoring the last week offline")
            scores = score_log(
                transactions, labels, model, start=test_from,
                policy=policy_from(settings), cpu_second_usd=settings.scoring.cpu_second_usd,
            )  # fmt: skip
            write_log(scores, workdir / "scores.parquet")
            result = evaluate(scores, labels)
            summary["test week"] = f"{result.transactions:,} transactions, {result.frauds} fraud"
            summary["AUC ROC / AP"] = f"{result.auc_roc:.3f} / {result.average_precision:.3f}"
            summary["card precision@100"] = f"{result.card_precision_at_k:.3f}"
            summary["cost per transaction"] = (
                f"{result.cost_per_transaction:.3f} (approve-all "
                f"{result.approve_all_cost_per_transaction:.3f})"
            )
            summary["actions"] = ", ".join(f"{k} {v:.2%}" for k, v in result.action_share.items())

            step("replaying the last week into Kafka")
            names = TopicNames.from_settings(settings.kafka)
            before = _count(settings.kafka, names.transactions)
            week = transactions.filter(
                pc.greater_equal(transactions["timestamp"], pa.scalar(test_from, TIMESTAMP))
            )
            sent = replay(week, known, kafka=settings.kafka)
            summary["replayed into Kafka"] = (
                f"{sent.transactions:,} transactions + {sent.labels:,} labels "
                f"at {sent.rate:,.0f}/s, {sent.failed} failed"
            )
            step("reading the topic back")
            arrived = _count(settings.kafka, names.transactions) - before
            summary["arrived on the transactions topic"] = f"{arrived:,}"
            if arrived != sent.transactions:
                raise fail(f"{sent.transactions:,} transactions sent but {arrived:,} arrived")
    except (LocalKafkaError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        if started_broker and not keep_kafka:
            broker.down()
    summary["elapsed"] = f"{time.monotonic() - began:.0f} s"
    summary["workdir"] = str(workdir)
    _print_summary(summary)


def _count(kafka: KafkaSettings, topic: str) -> int:
    """Messages on a topic now: the sum of its partitions' high watermarks minus low ones."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**kafka.client_config(), "group.id": "fraudstream-demo-count"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _print_summary(summary: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(title="fraudstream demo", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in summary.items():
        table.add_row(name, value)
    console.print(table)
