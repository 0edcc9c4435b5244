"""``fraudstream demo``: the main job on one machine, start to finish, with a summary.

It runs: the local Kafka (or the configured cluster) → topics → a simulated month of traffic → a
model trained on the first weeks (labels as the bank knew them) → the last week scored offline and
evaluated → a stream worker started → the month (and its labels) replayed into Kafka → every
decision read back (read_committed) and the last week's compared with the offline scores. Every
process it starts, it stops.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from fraudstream.commands.common import console, fail, steps

if TYPE_CHECKING:
    import pyarrow as pa

    from scoring.settings import KafkaSettings, Settings
    from stream.worker import Worker, WorkerStats


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
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if not settings.kafka.topic_prefix:  # fresh topics: a demo never mixes with earlier runs
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"topic_prefix": f"demo-{stamp}."})}
        )
    workdir = workdir or Path("runs") / f"demo-{stamp}"
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

            step("starting a stream worker")
            worker = _start_worker(settings, workdir)
            step("replaying the month into Kafka (the worker decides as it arrives)")
            sent = replay(transactions, labels, kafka=settings.kafka)
            summary["replayed into Kafka"] = (
                f"{sent.transactions:,} transactions + {sent.labels:,} labels "
                f"at {sent.rate:,.0f}/s, {sent.failed} failed"
            )
            step("reading the decisions back")
            names = TopicNames.from_settings(settings.kafka)
            decided, twice = _read_decisions(settings.kafka, names.decisions, sent.transactions)
            worker.stop()
            stats = worker.join()
            summary.update(
                _stream_summary(decided, twice, scores, sent.transactions, worker.seconds)
            )
            summary["worker"] = (
                f"{stats.decisions:,} decisions, {stats.dead_letters} dead letters, "
                f"{worker.late_events} late events"
            )
            if len(decided) != sent.transactions or twice:
                raise fail(
                    f"{sent.transactions:,} transactions sent, {len(decided):,} decided, "
                    f"{len(twice):,} twice"
                )
    except (LocalKafkaError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        if started_broker and not keep_kafka:
            broker.down()
    summary["elapsed"] = f"{time.monotonic() - began:.0f} s"
    summary["workdir"] = str(workdir)
    _print_summary(summary)


class _BackgroundWorker:
    """A stream worker on a thread of the demo process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stats: WorkerStats | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._thread.start()
        while not worker.ready and self._thread.is_alive():
            time.sleep(0.1)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:  # reported by join()
            self.error = exc

    @property
    def late_events(self) -> int:
        return self.worker.merge.late

    def stop(self) -> None:
        self.seconds = time.monotonic() - self.started
        self.worker.stop()

    def join(self) -> WorkerStats:
        self._thread.join(120)
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def _start_worker(settings: Settings, workdir: Path) -> _BackgroundWorker:
    from stream.worker import Worker

    # The demo replays a month as fast as it can: partitions are never idle on purpose, so a
    # long idle grace keeps online features exactly equal to offline (docs/stream.md).
    stream = settings.stream.model_copy(
        update={
            "state_dir": workdir / "state",
            "group_id": f"demo-{workdir.name}",
            "source_idle_ms": 2000.0,
            "label_idle_ms": 2000.0,
            "http_port": 0,
        }
    )
    worker = Worker(
        settings.model_copy(update={"stream": stream}),
        registry=workdir / "registry",
        instance_id="demo",
    )
    return _BackgroundWorker(worker)


def _read_decisions(
    kafka: KafkaSettings, topic: str, expected: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Committed decisions by transaction id (read_committed), and the ids decided twice; reads
    until ``expected`` are in and nothing new came for 2 s, or nothing new for 30 s."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"fraudstream-demo-{time.time_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    decided: dict[str, dict[str, Any]] = {}
    duplicates: list[str] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        last_new = time.monotonic()
        while time.monotonic() - last_new < (2 if len(decided) >= expected else 30):
            batch = consumer.consume(10_000, 0.5)
            for message in batch:
                value = message.value()
                if message.error() is None and value is not None:
                    decision = orjson.loads(value)
                    if decision["transaction_id"] in decided:
                        duplicates.append(decision["transaction_id"])
                    decided[decision["transaction_id"]] = decision
            if batch:
                last_new = time.monotonic()
    finally:
        consumer.close()
    return decided, duplicates


def _stream_summary(
    decided: dict[str, dict[str, Any]],
    twice: list[str],
    offline: pa.Table,
    sent: int,
    seconds: float,
) -> dict[str, str]:
    import numpy as np

    ids = offline.column("transaction_id").to_pylist()
    online = np.array([decided[i]["score"] for i in ids if i in decided])
    scores = offline["score"].to_pylist()
    reference = np.array([s for i, s in zip(ids, scores, strict=True) if i in decided])
    latency = np.array([d["latency_ms"] for d in decided.values()])
    worst = float(np.max(np.abs(online - reference))) if online.size else float("nan")
    return {
        "stream decisions": (
            f"{len(decided):,} of {sent:,} transactions decided, {len(twice):,} twice"
        ),
        "online vs offline (last week)": f"max |Δ score| = {worst:.1e} over {online.size:,}",
        "stream throughput": (
            f"{len(decided) / max(seconds, 1e-9):,.0f} decisions/s over the worker's run"
        ),
        "decision latency p50 / p99": (
            f"{np.percentile(latency, 50):.0f} / {np.percentile(latency, 99):.0f} ms "
            "(a month replayed flat out: mostly queueing)"
        ),
    }


def _print_summary(summary: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(title="fraudstream demo", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in summary.items():
        table.add_row(name, value)
    console.print(table)
