"""A faust worker doing the production worker's per-batch work, to benchmark the two side by side.

    .venv/bin/python benchmarks/faust_worker.py --bootstrap 127.0.0.1:9092 --topic-prefix dev. \\
        --registry registry [--model champion] [--batch 5000] [--within-ms 50] \\
        [--guarantee at_least_once|exactly_once] [--max-seconds N] [--data-dir DIR] [--web-port P]

One ``faust.App`` with one agent on ``{prefix}transactions`` (which must exist: faust never creates
or alters a topic here, and the leader-election topic is disabled). The agent takes micro-batches
with ``stream.take_events(batch, within)`` and hands each to the function the production worker
(``stream/worker.py``) is built around, :func:`scoring.messages.process_transactions`: msgspec
decoding, the numba ``FeatureEngine``, the compiled model, the decision policy, reasons and the
output records. Every ``OutRecord`` goes out through faust's producer, keyed as given: decisions to
``{prefix}decisions``, feature vectors to ``{prefix}feature-log``, bad messages (with their
``fraudstream-error`` header) to ``{prefix}transactions-dlq``. Each batch waits for its records'
delivery before faust acks its events, so an acked offset never runs ahead of its outputs.

On ``--max-seconds`` (counted from process start) or SIGTERM the worker stops through faust's own
shutdown (final offset commit / transaction commit) and prints one JSON line to stdout::

    {"decisions": n, "dead_letters": n, "batches": n, "cpu_seconds": s, "wall_seconds": s, ...}

``cpu_seconds`` is ``time.process_time()`` of the whole process (every thread: aiokafka's consumer
thread included), ``startup_cpu_seconds`` the part spent before faust started (imports, model
load), ``wall_seconds`` the time from faust's start to the end of its shutdown. Logs go to stderr.

What this is NOT: a faust port of the production worker. It cannot give its guarantees, and it
exists only to compare throughput and CPU of the same batch work:

* **Feature state is per worker and partial.** Each faust worker feeds its ``FeatureEngine`` only
  the partitions it is assigned. Card state is complete (cards are the partition key) but merchant
  and terminal aggregates see only this worker's share of the traffic, and a rebalance moves
  partitions without their state. The production worker reads every partition into every worker's
  state and decides only its own.
* **No labels and no event-time merge.** Only ``transactions`` is consumed, in arrival order per
  batch; the production worker merges ``labels`` in by event time, so label-driven features differ.
* **faust's exactly_once covers Kafka, not the numba state.** It commits offsets and outputs in
  Kafka transactions (one transactional producer per assigned source partition), but the in-memory
  feature state is neither checkpointed nor rolled back: after a crash or rebalance the replayed
  events are applied again on top of state that already saw them (or on an empty state elsewhere).
  Also, faust commits on a timer, concurrently with the agent, so outputs of a batch whose events
  are not acked yet can be committed in an earlier transaction than their offsets.
* **No checkpoints, no model hot-swap, no metrics endpoint.**

faust pitfalls met on the way (faust-streaming 0.15.3, aiokafka 0.14):

* With ``exactly_once``, ``Topic.send`` / ``TransactionManager.send`` pick the transactional
  producer from the *output* record's partition, computed from the *consumer's* metadata, which
  knows only subscribed topics: for an output topic it finds nothing and silently sends outside any
  transaction. Had it found the partition, a record keyed by transaction id would land in the
  transaction of an unrelated source partition, committed whenever *that* partition has offsets to
  commit (an idle one never does: the transaction stays open until the broker aborts it), and a
  worker that does not own that partition has no such producer at all (``ProducerSendError``).
  So, in ``exactly_once`` mode, this worker sends every output explicitly with the transactional id
  of its *source* partition and to the same partition number of the output topic (all data topics
  have the same partition count); keys stay as given. In ``at_least_once`` mode records are
  partitioned by key (aiokafka's murmur2, the same as the project's ``murmur2_random``).
* aiokafka handles lz4 only with ``cramjam`` installed, and the project does not install it
  (``aiokafka[lz4]``). The replay and the production producers write lz4 batches, so the faust
  consumer crashes on the first fetch (``UnsupportedCodecError``) unless the ``transactions`` topic
  has ``compression.type=uncompressed`` (the broker then stores the batches uncompressed; the
  integration test creates it so). The worker warns at start. Its own outputs are uncompressed
  unless ``--compression`` names a codec aiokafka has, where the production producer uses lz4.
* ``take()`` hands over values only; ``take_events()`` (present in 0.15) gives the events, hence
  keys and Kafka timestamps (in seconds, as floats) at no extra cost.
* ``take_events(batch, within)`` rarely fills a batch: faust moves events into the buffer one by one
  through the stream (a few thousand per second on a shared 2-core VM), and stops filling while
  the agent works on the previous batch. With ``--within-ms 50`` batches of a 5000 limit averaged
  ~300-400 messages; ``within`` sets the batch size more than ``--batch`` does.
* In ``exactly_once`` mode the transactional producers belong to the assigned partitions; outputs
  of a partition revoked while its events sat in the take buffer cannot be sent (no producer):
  they are dropped (``revoked_skipped``), their offsets are not committed here either.
* ``faust.Worker.execute_from_commandline`` always ends in ``SystemExit`` and swallows exceptions
  into exit code 1, and by default prints a banner and a spinner to stdout: here the worker gets
  ``quiet=True`` and stderr as its stdout, and the summary is printed after the ``SystemExit``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

START = time.monotonic()  # --max-seconds counts from here

log = logging.getLogger("fraudstream.faust_worker")


@dataclass
class Summary:
    decisions: int = 0
    dead_letters: int = 0
    batches: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    messages: int = 0  # input messages taken (decided, dead-lettered or both never)
    feature_log: int = 0
    busy_seconds: float = 0.0  # wall time inside the agent's batch work (score + send + deliver)
    score_seconds: float = 0.0  # ... of which in process_transactions
    active_seconds: float = 0.0  # from the first batch's start to the last batch's end
    startup_cpu_seconds: float = 0.0
    revoked_skipped: int = 0  # exactly_once: outputs not sent (partition revoked), not counted
    guarantee: str = ""
    partitions: int = 0
    error: str | None = None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a Kafka broker")
    parser.add_argument("--topic-prefix", default="", help="the deployment's topic prefix")
    parser.add_argument("--registry", required=True, help="model registry directory")
    parser.add_argument("--model", default="champion", help="alias or version to serve")
    parser.add_argument("--batch", type=int, default=5000, help="most messages per batch")
    parser.add_argument(
        "--within-ms", type=float, default=50.0, help="longest wait to fill a batch (ms)"
    )
    parser.add_argument(
        "--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once"
    )
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--data-dir", default=None, help="faust datadir (default: a temp dir)")
    parser.add_argument("--web-port", type=int, default=None, help="faust web port (default: off)")
    parser.add_argument("--group-id", default=None, help="app id / consumer group")
    parser.add_argument(
        "--commit-interval", type=float, default=2.8, help="faust broker_commit_interval (s)"
    )
    parser.add_argument("--linger-ms", type=float, default=2.0, help="producer linger (ms)")
    parser.add_argument("--compression", default=None, help="producer compression (aiokafka)")
    parser.add_argument("--loglevel", default="WARNING")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    if args.within_ms <= 0:
        parser.error("--within-ms must be > 0 (without it faust's take() can stall)")
    return args


def partition_counts(bootstrap: str, names: Sequence[str]) -> dict[str, int]:
    """Partition counts of existing topics (never creates one)."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    counts = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            raise SystemExit(f"topic {name} does not exist on {bootstrap}; create it first")
        counts[name] = len(topic.partitions)
    return counts


def build_scorer(registry: str, ref: str) -> Any:
    from scoring.decision import policy_from
    from scoring.features import FeatureEngine
    from scoring.pipeline import BatchScorer
    from scoring.registry import ModelRegistry
    from scoring.settings import Settings

    settings = Settings()
    model = ModelRegistry(registry).load(ref)
    return BatchScorer(
        model,
        policy_from(settings),
        engine=FeatureEngine(),
        cpu_second_usd=settings.scoring.cpu_second_usd,
        max_reasons=settings.scoring.max_reasons,
        reasons_method=settings.scoring.reasons_method,
    )


def _aiokafka_has_lz4() -> bool:
    try:
        from aiokafka.codec import has_lz4
    except ImportError:  # pragma: no cover - other aiokafka layouts
        return True
    return bool(has_lz4())


def accepted_positions(values: Sequence[bytes], dead: Sequence[Any]) -> list[int]:
    """Batch positions of the rows that were decided (the complement of the dead letters).

    ``process_transactions`` keeps batch order and builds each dead letter from ``values[i]``
    itself, in ascending ``i``: matching by identity in one pass recovers the rejected positions
    (equal-but-distinct objects are never confused; the same object twice, e.g. the ``b""``
    singleton, decodes the same way both times, so either match is right).
    """
    if not dead:
        return list(range(len(values)))
    out = []
    j = 0
    for i, value in enumerate(values):
        if j < len(dead) and value is dead[j].value:
            j += 1
        else:
            out.append(i)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.loglevel.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import faust
    from faust.types.enums import ProcessingGuarantee

    from scoring.messages import process_transactions
    from scoring.settings import KafkaSettings
    from stream.topics import TopicNames

    names = TopicNames.from_settings(KafkaSettings(topic_prefix=args.topic_prefix))
    outputs = (names.decisions, names.feature_log, names.transactions_dlq)
    counts = partition_counts(args.bootstrap, (names.transactions, *outputs))
    partitions = counts[names.transactions]
    exactly_once = args.guarantee == "exactly_once"
    if exactly_once:
        short = [n for n in outputs if counts[n] < partitions]
        if short:
            raise SystemExit(f"exactly_once needs >= {partitions} partitions on {short}")

    if not _aiokafka_has_lz4():
        log.warning(
            "aiokafka cannot decompress lz4 here (no cramjam): lz4 batches on %s crash the "
            "consumer unless the topic has compression.type=uncompressed (or another codec "
            "aiokafka can read)",
            names.transactions,
        )
    scorer = build_scorer(args.registry, args.model)
    summary = Summary(guarantee=args.guarantee, partitions=partitions)

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="fraudstream-faust-")
    app_id = args.group_id or f"fraudstream-faust-{args.topic_prefix}"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = faust.App(
        app_id,
        broker=f"kafka://{args.bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        processing_guarantee=ProcessingGuarantee(args.guarantee),
        topic_partitions=partitions,
        store="memory://",
        datadir=data_dir,
        web_enabled=args.web_port is not None,
        web_port=args.web_port or 6066,
        web_host="127.0.0.1",
        topic_allow_declare=False,  # never create or alter a topic
        topic_disable_leader=True,  # no "<id>-__assignor-__leader" topic either
        consumer_auto_offset_reset="earliest",
        # Batching like the production producer (linger 2 ms, 1 MB batches).
        producer_linger=args.linger_ms / 1000.0,
        producer_max_batch_size=1_000_000,
        producer_max_request_size=2_000_000,
        producer_compression_type=args.compression,
        producer_acks=-1,
        # Commit on the timer; a commit every 10k acked messages (the default) would dominate.
        broker_commit_every=10_000_000,
        broker_commit_interval=args.commit_interval,
        # Let the stream prefetch at least two batches before flow control pauses partitions.
        stream_buffer_maxsize=max(4096, 2 * args.batch),
        broker_max_poll_records=args.batch,
        autodiscover=False,
        loop=loop,
    )
    source = app.topic(names.transactions, internal=False)
    send_topics = {
        "decisions": names.decisions,
        "feature_log": names.feature_log,
        "dead_letters": names.transactions_dlq,
    }
    within = args.within_ms / 1000.0
    failed: list[BaseException] = []

    @app.agent(source, name="score")
    async def score(stream: Any) -> None:
        producer = app.producer
        send = producer.send
        group = None
        first_start: float | None = None
        async for events in stream.take_events(args.batch, within):
            started = time.perf_counter()
            try:
                keys = [e.key for e in events]
                values = [e.value if e.value is not None else b"" for e in events]
                now_ms = int(time.time() * 1000)
                arrived = [
                    int(e.message.timestamp * 1000) if e.message.timestamp else now_ms
                    for e in events
                ]
                out = process_transactions(scorer, keys, values, arrived_ms=arrived)
                scored = time.perf_counter()
                futures = []
                add = futures.append
                skipped: dict[str, int] = {}
                if exactly_once:
                    if group is None:
                        group = app.assignor.group_for_topic(names.transactions)
                    sources = [e.message.partition for e in events]
                    tids = [f"{app_id}-{group}-{p}" for p in sources]
                    # A partition revoked since its events were taken has no producer any more:
                    # its offsets will not be committed here, its new owner decides them again.
                    live = set(getattr(producer, "_transaction_producers", {}))
                    decided = accepted_positions(values, out.dead_letters)
                    rejected = sorted(set(range(len(values))) - set(decided))
                    for topic, records, where in (
                        (send_topics["decisions"], out.decisions, decided),
                        (send_topics["feature_log"], out.feature_log, decided),
                        (send_topics["dead_letters"], out.dead_letters, rejected),
                    ):
                        for (key, value, headers), i in zip(records, where, strict=True):
                            if tids[i] not in live:
                                skipped[topic] = skipped.get(topic, 0) + 1
                                continue
                            add(
                                await send(
                                    topic,
                                    key,
                                    value,
                                    sources[i],
                                    None,
                                    headers,
                                    transactional_id=tids[i],
                                )
                            )
                else:
                    for topic, records in (
                        (send_topics["decisions"], out.decisions),
                        (send_topics["feature_log"], out.feature_log),
                        (send_topics["dead_letters"], out.dead_letters),
                    ):
                        for key, value, headers in records:
                            add(await send(topic, key, value, None, None, headers))
                if futures:
                    await asyncio.gather(*futures)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("batch failed; stopping")
                failed.append(exc)
                os.kill(os.getpid(), signal.SIGTERM)
                raise
            summary.batches += 1
            summary.messages += len(events)
            summary.decisions += len(out.decisions) - skipped.get(names.decisions, 0)
            summary.feature_log += len(out.feature_log) - skipped.get(names.feature_log, 0)
            summary.dead_letters += len(out.dead_letters) - skipped.get(names.transactions_dlq, 0)
            summary.revoked_skipped += sum(skipped.values())
            ended = time.perf_counter()
            summary.busy_seconds += ended - started
            summary.score_seconds += scored - started
            if first_start is None:
                first_start = started
            summary.active_seconds = ended - first_start

    worker = faust.Worker(
        app,
        loop=loop,
        quiet=True,
        stdout=sys.stderr,
        redirect_stdouts=False,
        loglevel=args.loglevel.upper(),
        override_logging=False,
    )
    if args.max_seconds is not None:
        remaining = max(args.max_seconds - (time.monotonic() - START), 0.0)
        loop.call_later(remaining, os.kill, os.getpid(), signal.SIGTERM)
    summary.startup_cpu_seconds = time.process_time()
    started = time.monotonic()
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    summary.wall_seconds = time.monotonic() - started
    summary.cpu_seconds = time.process_time()
    crash = failed[0] if failed else (worker.crash_reason or app.crash_reason)
    if crash is not None:
        summary.error = repr(crash)
        code = code or 1
    sys.stdout.write(orjson.dumps(asdict(summary)).decode() + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
