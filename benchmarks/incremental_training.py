"""Issue 6: a new fraud typology mid-period — a frozen model against the incremental trainer.

**Accuracy** (no Kafka). A simulated period with ``bin_attack`` switched on at ``--typology-day``
and fraud reports arriving up to ``--label-delay-days`` late. Features come from
``scoring.features.replay_log`` (the vectors the worker logs: labels applied at their
``reported_at``). A champion is trained offline on the first ``--champion-days`` days with the
labels known ``--label-delay-days`` later, and serves from then on. Then, day by day:

* **frozen** — that champion scores every day;
* **incremental** — the trainer's window store (``training.trainer_state.WindowStore``) is fed
  each day's transactions and feature vectors, and the labels whose ``reported_at`` has passed;
  at the start of every simulated day the trainer's own trigger (``retrain_due``), plan
  (``plan_round``) and round (``run_round``: continued and fresh challengers, holdout, the real
  promotion margin and guardrails, register = compile, publish) run exactly as
  ``training/trainer.py`` runs them on its schedule, with the trainer's event-time clock (the
  newest transaction time) and its eviction; the day is then scored by whatever model is
  ``champion`` at its start (the compiled library, as the workers score).

Both are measured per day on that day's transactions against the final truth (every fraud label
ever reported): average precision, card precision@100, realised cost per transaction of the
policy's decisions (``training.trainer_rounds.evaluate``, the trainer's holdout metrics).

**Recovery** (docs/training.md, "Reacting to a new typology"). The new typology comes in bursts
(a BIN attack is ~48 transactions within 45 minutes; on the days between attacks nothing new
happens), so it is judged on the **attack days**, the days with frauds of the new typology: the
incremental job has recovered on the first attack day from which, on that and every later attack
day (at least ``CONFIRM_DAYS`` of them: a lucky last day proves nothing), its daily average
precision beats the frozen model's by at least ``--lead``. Reported in days after the typology's
first day. Beside it, per attack day: the AP of the new typology alone (the day's genuine
transactions and its new-typology frauds; the established frauds left out) and the share of the
new typology's frauds the policy reviews or declines ("caught").

**Swap** (``--swap``, a real broker): a local Kafka, ``--workers`` ``fraudstream worker``
subprocesses deciding a trickle of traffic; ``--swap-repeats`` times a new version is promoted
and announced (``scoring.announcements.announcement_for`` + ``stream.announce``) and each
worker's ``/metrics`` is polled every 20 ms for ``fraudstream_model_info{version=…}``: the time
from the alias move to the last worker serving it.

Writes results/incremental_training.{json,md,png}.

    .venv/bin/python benchmarks/incremental_training.py                # ~10 min, 2 shared cores
    .venv/bin/python benchmarks/incremental_training.py --no-swap --days 40 --cards 1500  # quick
    .venv/bin/python benchmarks/incremental_training.py --transactions T --labels L --days 30
        # a given log: frozen vs incremental day by day (no typology, so no recovery)
    ... --out DIR                                  # results elsewhere than benchmarks/results
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import typer
from sklearn.metrics import average_precision_score
from stream_throughput import free_ports

from scoring.decision import policy_from
from scoring.features import FeatureEngine, replay_log
from scoring.logs import TIMESTAMP
from scoring.registry import LoadedModel, ModelRegistry
from scoring.settings import Settings, TrainingSettings
from training.dataset import fraud_targets
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register
from training.trainer_rounds import (
    DAY_MS,
    RoundInputs,
    evaluate,
    plan_round,
    retrain_due,
    run_round,
)
from training.trainer_state import RowSet, WindowStore

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
NAME = "incremental_training"
BASELINE_DAYS = 7  # the pre-typology level: mean AP of the 7 days before the typology
TRICKLE_RATE = 200.0  # transactions/s while the swaps are timed
CONFIRM_DAYS = 3  # recovery must hold on at least this many attack days (else: not seen)


# ----------------------------------------------------------------------------------- the walk


@dataclass
class DayResult:
    day: int
    date: str
    transactions: int
    frauds: int
    new_typology_frauds: int
    champion: str  # the incremental arm's model that day
    frozen_ap: float
    incremental_ap: float
    frozen_cp100: float
    incremental_cp100: float
    frozen_cost: float
    incremental_cost: float
    frozen_new_typology_recall: float  # share of the day's new-typology frauds not approved
    incremental_new_typology_recall: float
    frozen_new_typology_ap: float  # AP with the established frauds left out of the day
    incremental_new_typology_ap: float


@dataclass
class RoundRecord:
    day: int  # the round ran at the start of this day
    outcome: str
    reason: str | None
    detail: str
    champion: str | None
    promoted: str | None
    challenger: str | None
    holdout: str  # the plan
    trained_until_day: float  # the challengers' data ends here (= the holdout's start)
    holdout_frauds: int
    train_rows: dict[str, int]
    seconds: dict[str, float]
    compile_seconds: float | None
    scorecards: dict[str, dict[str, float]]


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _all_rows(transactions: pa.Table, X: np.ndarray, y: np.ndarray) -> RowSet:
    """Every transaction as the trainer's RowSet (targets: the final truth)."""
    cards = transactions["card_id"].combine_chunks().dictionary_encode().indices.to_numpy()

    def objects(name: str) -> np.ndarray:
        return np.asarray(transactions[name].to_pylist(), dtype=object)

    return RowSet(
        X=X,
        y=y.astype(np.int8),
        ts_ms=transactions["timestamp"].cast(TIMESTAMP).cast(pa.int64()).to_numpy(),
        amount=np.asarray(transactions["amount"].to_numpy(), np.float64),
        bank=objects("bank_id"),
        card=cards.astype(np.int32),
        card_id=objects("card_id"),
        merchant=objects("merchant_id"),
        country=objects("country"),
        model_version=np.full(len(y), None, dtype=object),
    )


@dataclass(frozen=True)
class Period:
    """Where the walk's days start, the typology to look for (None: a log, no known typology),
    and what the report says about the data."""

    start_ms: int
    new_typology: str | None
    info: dict[str, Any]

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)


def _log_period(
    transactions: pa.Table, labels: pa.Table, source: str, *, days: int, maturity: float
) -> tuple[pa.Table, pa.Table, Period]:
    """A given log from the midnight (UTC) before its first transaction, cut after ``days`` days;
    no typology is known, so there are no attack days and no recovery."""
    transactions = transactions.take(pc.sort_indices(transactions, [("timestamp", "ascending")]))
    ts = transactions["timestamp"].cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    start_ms = int(ts[0] // DAY_MS * DAY_MS)
    span = int((ts[-1] - start_ms) // DAY_MS) + 1
    days = min(days, span)
    transactions = transactions.slice(0, int(np.searchsorted(ts, start_ms + days * DAY_MS)))
    fraud_ids = labels.filter(pc.equal(labels["is_fraud"], True))["transaction_id"]
    frauds = pc.sum(pc.is_in(transactions["transaction_id"], value_set=fraud_ids)).as_py() or 0
    info = {
        "source": source, "days": days, "days_in_log": span,
        "cards": pc.count_distinct(transactions["card_id"]).as_py(),
        "fraud_rate": frauds / max(transactions.num_rows, 1),
        "new_typology": None, "new_typology_day": None, "new_typology_share": None,
        "max_label_delay_days": maturity,
    }  # fmt: skip
    return transactions, labels, Period(start_ms, None, info)


def accuracy_walk(
    *,
    days: int,
    cards: int,
    typology_day: int,
    fraud_rate: float,
    label_delay_days: float,
    typology_share: float,
    champion_days: int,
    training: TrainingSettings,
    seed: int,
    work: Path,
    log: tuple[pa.Table, pa.Table, str] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    if log is None:
        config = SimulationConfig(
            days=days, cards=cards, seed=seed, fraud_rate=fraud_rate,
            new_typology_day=typology_day, max_label_delay_days=label_delay_days,
            label_maturity_days=label_delay_days, new_typology_share=typology_share,
        )  # fmt: skip
        transactions, labels = simulate(config)
        period = Period(config.start_ms, config.new_typology, json.loads(config.model_dump_json()))
    else:
        transactions, labels, period = _log_period(*log, days=days, maturity=label_delay_days)
        days = period.info["days"]
    X = replay_log(transactions, labels, engine=FeatureEngine())
    print(f"simulated {transactions.num_rows:,} transactions, {labels.num_rows:,} labels; "
          f"features in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    n = transactions.num_rows
    ts = transactions["timestamp"].cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    start_ms = period.start_ms
    start = period.start
    day_of = (ts - start_ms) // DAY_MS
    truth = fraud_targets(transactions, labels)
    frauds = labels.filter(pc.equal(labels["is_fraud"], True))
    new_ids = (
        frauds.filter(pc.equal(frauds["fraud_type"], period.new_typology))["transaction_id"]
        if period.new_typology is not None and "fraud_type" in frauds.column_names
        else pa.array([], pa.string())
    )
    is_new = np.asarray(
        pc.is_in(transactions["transaction_id"], value_set=new_ids).to_numpy(zero_copy_only=False)
    )
    everything = _all_rows(transactions, X, truth)
    policy = policy_from(Settings())
    reported_ms = labels["reported_at"].cast(TIMESTAMP).cast(pa.int64()).to_numpy()

    # The first champion: trained offline on [0, champion_days) once those days' labels have
    # matured, i.e. at day champion_days + maturity; it serves from then on.
    serve_day = champion_days + math.ceil(training.label_maturity_days)
    registry = ModelRegistry(work / "registry", cache_dir=work / "compiled")
    started = time.perf_counter()
    known = labels.filter(pc.less(labels["reported_at"],
                                  pa.scalar(start_ms + serve_day * DAY_MS, TIMESTAMP)))  # fmt: skip
    first = train_and_register(
        transactions, known, registry=registry, start=start,
        until=start + timedelta(days=champion_days), seed=training.seed,
    )  # fmt: skip
    registry.promote(first.version)
    seconds = time.perf_counter() - started
    print(f"first champion {first.version} ({first.params.get('num_trees')} trees) in "
          f"{seconds:.1f} s; serving from day {serve_day}", flush=True)  # fmt: skip
    models: dict[str, LoadedModel] = {first.version: registry.load(first.version)}

    store = WindowStore()
    maturity_ms = round(training.label_maturity_days * DAY_MS)
    keep_ms = maturity_ms + round(training.window_days * DAY_MS)
    fed_tx = 0  # transactions [0, fed_tx) are in the store (the log is in time order)
    fed_labels = 0
    label_order = np.argsort(reported_ms, kind="stable")
    last_round_horizon: int | None = None
    rounds: list[RoundRecord] = []
    results: list[DayResult] = []
    for day in range(serve_day, days):
        day_start = start_ms + day * DAY_MS
        # what the trainer has read by the start of the day
        upto = int(np.searchsorted(ts, day_start, side="left"))
        if upto > fed_tx:
            chunk = transactions.slice(fed_tx, upto - fed_tx)
            store.add_transactions(chunk)
            store.add_features(
                chunk["transaction_id"].to_pylist(), chunk["bank_id"].to_pylist(),
                X[fed_tx:upto], np.zeros(upto - fed_tx), [None] * (upto - fed_tx),
            )  # fmt: skip
            fed_tx = upto
        label_upto = int(np.searchsorted(reported_ms[label_order], day_start, side="left"))
        if label_upto > fed_labels:
            store.add_labels(labels.take(pa.array(label_order[fed_labels:label_upto])))
            fed_labels = label_upto
        # The trainer's clock (the newest transaction time) as it crosses midnight: the
        # first transaction of the day has just been read.
        clock = day_start
        store.evict(clock - keep_ms)

        # the trainer's trigger and round (training/trainer.py, _maybe_start_round)
        manifest = registry.get("champion")
        until = manifest.window.until
        until_ms = None if until is None else round(until.timestamp() * 1000)
        horizon = clock - maturity_ms
        marks = [m for m in (until_ms, last_round_horizon) if m is not None]
        base = max(marks) if marks else None
        new = store.count_usable(clock, maturity_ms, base)
        oldest = store.oldest_ms()
        moved = horizon - (base if base is not None else (oldest or horizon))
        if retrain_due(new, moved, training):
            plan = plan_round(clock, training, until_ms)
            last_round_horizon = horizon
            if plan is not None:
                data = store.rows(store.usable(clock, maturity_ms, plan.window_start_ms), clock)
                result = run_round(RoundInputs(data, plan), registry, training, policy)
                holdout = data.between(plan.holdout_start_ms, plan.horizon_ms)
                record = RoundRecord(
                    day=day, outcome=result.outcome, reason=result.reason, detail=result.detail,
                    champion=result.champion, promoted=result.promoted,
                    challenger=result.challenger, holdout=plan.describe(),
                    trained_until_day=(plan.holdout_start_ms - start_ms) / DAY_MS,
                    holdout_frauds=holdout.frauds, train_rows=dict(result.train_rows),
                    seconds={k: round(v, 3) for k, v in result.seconds.items()},
                    compile_seconds=result.compile_seconds,
                    scorecards={k: v.as_dict() for k, v in result.scorecards.items()},
                )  # fmt: skip
                rounds.append(record)
                stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
                print(f"day {day}: round {result.outcome} {result.reason or result.promoted} "
                      f"({result.challenger or '-'}); {stages}", flush=True)  # fmt: skip
        champion = registry.resolve("champion")
        if champion not in models:
            models[champion] = registry.load(champion)

        rows = np.flatnonzero(day_of == day)
        today = everything.take(rows)
        cards_ = {}
        recall: dict[str, float] = {}
        new_ap: dict[str, float] = {}
        for arm, version in (("frozen", first.version), ("incremental", champion)):
            scores = models[version].score_many(np.ascontiguousarray(X[rows]))
            cards_[arm] = evaluate(scores, today, policy, training.card_precision_k)
            action = policy.decide_many(today.policy_table(), scores).action
            hit = is_new[rows]
            recall[arm] = float((action[hit] != 0).mean()) if hit.any() else math.nan
            others = ~hit & (truth[rows] == 0)  # genuine transactions of the day
            if hit.any():
                keep = hit | others
                new_ap[arm] = float(average_precision_score(hit[keep], scores[keep]))
            else:
                new_ap[arm] = math.nan
        results.append(
            DayResult(
                day=day,
                date=(start + timedelta(days=day)).date().isoformat(),
                transactions=len(rows),
                frauds=int(truth[rows].sum()),
                new_typology_frauds=int(is_new[rows].sum()),
                champion=champion,
                frozen_ap=cards_["frozen"].average_precision,
                incremental_ap=cards_["incremental"].average_precision,
                frozen_cp100=cards_["frozen"].card_precision_at_k,
                incremental_cp100=cards_["incremental"].card_precision_at_k,
                frozen_cost=cards_["frozen"].cost_per_transaction,
                incremental_cost=cards_["incremental"].cost_per_transaction,
                frozen_new_typology_recall=recall["frozen"],
                incremental_new_typology_recall=recall["incremental"],
                frozen_new_typology_ap=new_ap["frozen"],
                incremental_new_typology_ap=new_ap["incremental"],
            )
        )
        last = results[-1]
        print(f"day {day:2d}: {last.frauds:3d} frauds ({last.new_typology_frauds:3d} new); AP "
              f"frozen {last.frozen_ap:.3f}, incremental {last.incremental_ap:.3f} "
              f"({champion})", flush=True)  # fmt: skip
    return {
        "simulation": period.info,
        "transactions": n,
        "serve_day": serve_day,
        "first_champion": first.version,
        "first_champion_trees": first.params.get("num_trees"),
        "days": [asdict(r) for r in results],
        "rounds": [asdict(r) for r in rounds],
        "registry": str(work / "registry"),
        "versions": [m.version for m in registry.list()],
    }


def recovery(
    days: list[dict[str, Any]],
    rounds: list[dict[str, Any]],
    typology_day: int | None,
    lead: float,
) -> dict[str, Any]:
    """See the module docstring: the first attack day (a day with frauds of the new typology)
    from which, on it and every later attack day (at least CONFIRM_DAYS of them), the
    incremental model's average precision beats the frozen model's by at least ``lead``.
    Without a typology (a given log): no attack days, only the means over every day."""
    no_typology = typology_day is None
    if typology_day is None:
        typology_day = min((d["day"] for d in days), default=0)
    by_day = {d["day"]: d for d in days}
    before = [by_day[d] for d in range(typology_day - BASELINE_DAYS, typology_day) if d in by_day]
    attacks = [d for d in days if d["day"] >= typology_day and d["new_typology_frauds"] > 0]
    ahead = [d["incremental_ap"] - d["frozen_ap"] >= lead for d in attacks]
    recovered = None
    for i, day in enumerate(attacks):
        if all(ahead[i:]) and len(ahead) - i >= CONFIRM_DAYS:
            recovered = day["day"]
            break
    out: dict[str, Any] = {
        "lead": lead,
        "confirm_days": CONFIRM_DAYS,
        "attack_days": [d["day"] for d in attacks],
        "recovered_on_day": recovered,
        "recovery_days": None if recovered is None else recovered - typology_day,
    }
    # The first promoted model whose training data held a day of the new typology, and the
    # earliest the settings allow one: its data ends where the holdout starts, eval_days before
    # the horizon, which is maturity behind the clock (docs/training.md).
    learnt = [
        r for r in rounds
        if r["promoted"] and r["trained_until_day"] > typology_day and not no_typology
    ]  # fmt: skip
    out["first_model_trained_on_it"] = (
        {"version": learnt[0]["promoted"], "serves_from_day": learnt[0]["day"],
         "data_until_day": learnt[0]["trained_until_day"]}
        if learnt else None
    )  # fmt: skip

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if v is not None and not math.isnan(v)]
        return float(np.mean(values)) if values else None

    for arm in ("frozen", "incremental"):
        later = [d for d in attacks if recovered is not None and d["day"] >= recovered]
        out[arm] = {
            "ap_7_days_before": mean([d[f"{arm}_ap"] for d in before]),
            "ap_attack_days": mean([d[f"{arm}_ap"] for d in attacks]),
            "ap_attack_days_from_recovery": mean([d[f"{arm}_ap"] for d in later]),
            "new_typology_ap_from_recovery": mean([d[f"{arm}_new_typology_ap"] for d in later]),
            "caught_from_recovery": mean([d[f"{arm}_new_typology_recall"] for d in later]),
            "ap_all_days_after": mean([d[f"{arm}_ap"] for d in days if d["day"] >= typology_day]),
        }
    return out


# ---------------------------------------------------------------------------------- swap


def _serving(port: int, version: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    needle = f'fraudstream_model_info{{version="{version}"}} 1.0'
    return needle in text


def swap_latency(
    registry_dir: Path, versions: list[str], workers: int, repeats: int, work: Path, seed: int
) -> dict[str, Any]:
    """Promote + announce ``repeats`` versions; time until every worker serves each."""
    from scoring.announcements import announcement_for
    from stream.announce import publish_announcement
    from stream.local_kafka import LocalKafka
    from stream.replay import replay
    from stream.topics import create_topics

    registry = ModelRegistry(registry_dir)
    start_version = registry.resolve("champion")
    # Distinct versions never served before by these workers: the ones the walk registered
    # (trainer outputs), and copies of the last one when there are too few.
    pool = [v for v in versions if v != start_version]
    text = registry.storage.local_file(f"versions/{versions[-1]}/model.txt")
    names = registry.get(versions[-1]).feature_names
    while len(pool) < repeats + 1:
        print("registering one more version for the swap runs ...", flush=True)
        pool.append(registry.register(text, feature_names=names).version)
    pool = pool[-(repeats + 1) :]  # the first one warms up (a fresh broker's first producer)

    # traffic at TRICKLE_RATE for about as long as the swaps take (~4 s each, 5 s before)
    transactions, labels = simulate(SimulationConfig(days=4, cards=1500, seed=seed + 1))
    transactions = transactions.slice(0, int(TRICKLE_RATE * (5 + 4 * len(pool))))
    port, controller = free_ports(2)
    local = Settings().kafka.model_copy(
        update={"local_port": port, "local_controller_port": controller,
                "local_dir": work / "broker", "local_heap": "-Xms512m -Xmx512m"}
    )  # fmt: skip
    broker = LocalKafka(local)
    broker.up(timeout=180)
    processes: list[subprocess.Popen[bytes]] = []
    samples: list[dict[str, Any]] = []
    try:
        kafka = local.model_copy(
            update={"bootstrap_servers": broker.bootstrap,
                    "topic_prefix": f"bench-swap-{uuid.uuid4().hex[:6]}.", "partitions": 2}
        )  # fmt: skip
        create_topics(kafka)
        ports = []
        for i in range(workers):
            (http_port,) = free_ports(1)
            env = {
                **os.environ,
                "FRAUD_KAFKA__BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
                "FRAUD_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
                "FRAUD_SCORING__REGISTRY": str(registry_dir),
                "FRAUD_STREAM__STATE_DIR": str(work / "state"),
                "FRAUD_STREAM__SESSION_TIMEOUT_MS": "6000",
            }
            log = open(work / f"worker-{i}.log", "wb")  # noqa: SIM115 -- the child's
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "fraudstream", "worker", "--instance", f"w{i}",
                 "--port", str(http_port)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
            ports.append(http_port)
        deadline = time.monotonic() + 180
        for http_port in ports:
            while not _serving(http_port, start_version):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers not ready; see {work}/worker-*.log")
                time.sleep(0.2)
        # a trickle of traffic while the models move (workers swap between two batches)
        trickle = threading.Thread(
            target=lambda: replay(transactions, labels, kafka=kafka, rate=TRICKLE_RATE),
            daemon=True,
        )
        trickle.start()
        time.sleep(5.0)
        for attempt, version in enumerate(pool):
            state = registry.promote(version)
            moved_at = state.log[-1].at.timestamp()
            publish_announcement(
                kafka, announcement_for(registry, "champion", state.log[-1].previous)
            )
            announced = time.time()
            pending = dict(enumerate(ports))
            seen: dict[int, float] = {}
            limit = time.monotonic() + 60
            while pending and time.monotonic() < limit:
                for i, http_port in list(pending.items()):
                    if _serving(http_port, version):
                        seen[i] = time.time() - moved_at
                        del pending[i]
                time.sleep(0.02)
            if pending:
                raise RuntimeError(f"{version} not served by every worker within 60 s")
            sample = {
                "warm_up": attempt == 0,
                "version": version,
                "announce_seconds": announced - moved_at,
                "per_worker_seconds": [seen[i] for i in sorted(seen)],
                "last_worker_seconds": max(seen.values()),
            }
            samples.append(sample)
            warm = " (warm-up)" if attempt == 0 else ""
            print(f"swap to {version}: last worker serving it {sample['last_worker_seconds']:.2f} "
                  f"s after the alias moved{warm}", flush=True)  # fmt: skip
            time.sleep(2.0)
        trickle.join(120)  # the producer finishes before the broker goes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.down()
    timed = [s for s in samples if not s["warm_up"]]
    last = np.asarray([s["last_worker_seconds"] for s in timed])
    announce = np.asarray([s["announce_seconds"] for s in timed])
    return {
        "announce_median_s": float(np.median(announce)),
        "workers": workers,
        "repeats": repeats,
        "poll_interval_s": 0.02,
        "samples": samples,
        "min_s": float(last.min()),
        "median_s": float(np.median(last)),
        "max_s": float(last.max()),
    }


# -------------------------------------------------------------------------------- reports


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _recovered_text(rec: dict[str, Any]) -> str:
    if rec["recovery_days"] is None:
        return "not within the run"
    return f"{rec['recovery_days']} days after the typology started (day {rec['recovered_on_day']})"


def _learnt_text(rec: dict[str, Any], results: dict[str, Any]) -> str:
    training = results["training"]
    typology_day = results["accuracy"]["simulation"]["new_typology_day"]
    earliest = typology_day + 1 + training["eval_days"] + training["label_maturity_days"]
    first = rec["first_model_trained_on_it"]
    text = (
        f"The earliest a model trained on the new typology can serve with these settings is "
        f"day {earliest:g} (typology day {typology_day} + 1 day of it in the training data + "
        f"holdout {training['eval_days']:g} d + maturity {training['label_maturity_days']:g} d)"
    )
    if first is None:
        return text + "; none was promoted within the run."
    return (
        text + f"; the first one, {first['version']} (data until day "
        f"{first['data_until_day']:g}), served from day {first['serves_from_day']}."
    )


def write_reports(results: dict[str, Any], out: Path = RESULTS) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(_nan_to_none(results), indent=2) + "\n")
    walk = results["accuracy"]
    sim = walk["simulation"]
    typology_day = sim["new_typology_day"]
    rec = results["recovery"]
    settings = results["training"]
    trainer = (
        f"Trainer: maturity {settings['label_maturity_days']:g} d, window "
        f"{settings['window_days']:g} d, holdout {settings['eval_days']:g} d, a round every day, "
        f"margin {settings['promote_margin']:g}, guardrails at their defaults."
    )
    if typology_day is None:  # a given log: no typology to recover from
        lines = [
            "# Incremental training on a log: frozen model vs the trainer's rounds",
            "",
            f"{results['machine']}. Command: `{results['command']}` "
            f"({results['wall_minutes']:.1f} min).",
            "",
            f"{sim['source']}: the first {sim['days']} of its {sim['days_in_log']} days, "
            f"{sim['cards']:,} cards, {walk['transactions']:,} transactions, fraud rate "
            f"{sim['fraud_rate']:.4f}. First champion {walk['first_champion']} trained on days "
            f"0–{results['champion_days'] - 1} with the labels reported by day "
            f"{walk['serve_day']}, serving from then on. {trainer} No typology start is known, "
            "so there are no attack days and no recovery: the mean daily average precision of "
            f"each arm over the served days: frozen {_fmt(rec['frozen']['ap_all_days_after'])}, "
            f"incremental {_fmt(rec['incremental']['ap_all_days_after'])}.",
        ]
        return _finish_report(lines, results, out)
    lines = [
        "# Incremental training: a new fraud typology mid-period",
        "",
        f"{results['machine']}. Command: `{results['command']}` ({results['wall_minutes']:.1f} "
        "min).",
        "",
        f"Simulator: {sim['days']} days, {sim['cards']:,} cards, {walk['transactions']:,} "
        f"transactions, fraud rate {sim['fraud_rate']:g}, `{sim['new_typology']}` from day "
        f"{typology_day} ({sim['new_typology_share']:.0%} of the fraud budget once ramped up), "
        f"fraud reports up to {sim['max_label_delay_days']:g} days late. First "
        f"champion {walk['first_champion']} trained on days 0–{results['champion_days'] - 1}, "
        f"serving from day {walk['serve_day']}. Trainer: maturity "
        f"{settings['label_maturity_days']:g} d, window {settings['window_days']:g} d, holdout "
        f"{settings['eval_days']:g} d, a round every simulated day, margin "
        f"{settings['promote_margin']:g}, guardrails at their defaults.",
        "",
        "## Recovery",
        "",
        "The new typology comes in bursts (one BIN attack: ~48 transactions on ~40 cards of one "
        "bank at one shop within 45 minutes); attack days: "
        f"{', '.join(map(str, rec['attack_days']))}. **Recovered** = the first attack day from "
        f"which, on every attack day (at least {rec['confirm_days']} of them), the incremental "
        f"model's daily average precision beats the frozen model's by at least {rec['lead']:g}. "
        "New-typology AP = the day's genuine transactions and new-typology frauds only; caught = "
        "share of the new typology's frauds the policy reviews or declines on the model's scores.",
        "",
        f"**Recovery: {_recovered_text(rec)}.** {_learnt_text(rec, results)}",
        "",
        "| | AP, 7 days before | AP, all attack days | from recovery on: AP, attack days | "
        "new-typology AP | caught | AP, all days after the start |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ("frozen", "incremental"):
        r = rec[arm]
        lines.append(
            f"| {arm} | {_fmt(r['ap_7_days_before'])} | {_fmt(r['ap_attack_days'])} | "
            f"{_fmt(r['ap_attack_days_from_recovery'])} | "
            f"{_fmt(r['new_typology_ap_from_recovery'])} | "
            f"{_fmt(r['caught_from_recovery'], '.0%')} | {_fmt(r['ap_all_days_after'])} |"
        )
    by_day = {d["day"]: d for d in walk["days"]}
    trained = {r["promoted"]: r["trained_until_day"] for r in walk["rounds"] if r["promoted"]}
    lines += [
        "",
        "| attack day | new-typology frauds | AP frozen | AP incremental | lead | new-typology AP "
        "frozen / incr. | caught frozen / incr. | incremental model (data until day) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for day in rec["attack_days"]:
        d = by_day[day]
        until = trained.get(d["champion"], results["champion_days"])
        lines.append(
            f"| {day} | {d['new_typology_frauds']} | {_fmt(d['frozen_ap'])} | "
            f"{_fmt(d['incremental_ap'])} | {d['incremental_ap'] - d['frozen_ap']:+.3f} | "
            f"{_fmt(d['frozen_new_typology_ap'])} / {_fmt(d['incremental_new_typology_ap'])} | "
            f"{_fmt(d['frozen_new_typology_recall'], '.0%')} / "
            f"{_fmt(d['incremental_new_typology_recall'], '.0%')} | {d['champion']} "
            f"({until:g}) |"
        )
    return _finish_report(lines, results, out)


def _finish_report(lines: list[str], results: dict[str, Any], out: Path) -> str:
    """The per-day, per-round and swap parts, the same with or without a typology."""
    walk = results["accuracy"]
    typology_day = walk["simulation"]["new_typology_day"]
    lines += [
        "",
        "## Per day",
        "",
        "AP = average precision, CP@100 = card precision@100, cost = realised cost per "
        "transaction of the default policy's decisions; new = frauds of the new typology, "
        "caught = share of them reviewed or declined.",
        "",
        "| day | tx | frauds | new | AP frozen | AP incr. | CP@100 frozen | CP@100 incr. | "
        "cost frozen | cost incr. | caught frozen | caught incr. | incremental model |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in walk["days"]:
        mark = " ◀ typology" if d["day"] == typology_day else ""
        lines.append(
            f"| {d['day']}{mark} | {d['transactions']:,} | {d['frauds']} | "
            f"{d['new_typology_frauds']} | {_fmt(d['frozen_ap'])} | {_fmt(d['incremental_ap'])} | "
            f"{_fmt(d['frozen_cp100'], '.2f')} | {_fmt(d['incremental_cp100'], '.2f')} | "
            f"{_fmt(d['frozen_cost'])} | {_fmt(d['incremental_cost'])} | "
            f"{_fmt(d['frozen_new_typology_recall'], '.0%')} | "
            f"{_fmt(d['incremental_new_typology_recall'], '.0%')} | {d['champion']} |"
        )
    lines += [
        "",
        "## Rounds",
        "",
        "At the start of each day; seconds single-threaded (`num_threads` 1). register = compile "
        "+ store; compile = the gcc part of it.",
        "",
        "| day | outcome | challenger | holdout frauds | fit continued s | fit fresh s | "
        "evaluate s | register s | compile s | champion AP | continued AP | fresh AP |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in walk["rounds"]:
        s, cards = r["seconds"], r["scorecards"]

        def ap(name: str, cards: dict[str, Any] = cards) -> str:
            return _fmt(cards[name]["average_precision"]) if name in cards else "–"

        outcome = (
            f"**promoted {r['promoted']}**" if r["outcome"] == "promoted" else
            f"{r['outcome']}: {r['reason']}"
        )  # fmt: skip
        lines.append(
            f"| {r['day']} | {outcome} | {r['challenger'] or '–'} | {r['holdout_frauds']} | "
            f"{_fmt(s.get('fit_continued'), '.1f')} | {_fmt(s.get('fit_fresh'), '.1f')} | "
            f"{_fmt(s.get('evaluate'), '.1f')} | {_fmt(s.get('register'), '.1f')} | "
            f"{_fmt(r['compile_seconds'], '.1f')} | {ap('champion')} | {ap('continued')} | "
            f"{ap('fresh')} |"
        )
    timing = results["round_timing"]
    lines += [
        "",
        f"Per round (median over {timing['rounds']} rounds that trained): fit continued "
        f"{_fmt(timing['fit_continued_median_s'], '.1f')} s, fit fresh "
        f"{_fmt(timing['fit_fresh_median_s'], '.1f')} s, evaluate "
        f"{_fmt(timing['evaluate_median_s'], '.1f')} s; per promotion: register "
        f"{_fmt(timing['register_median_s'], '.1f')} s of which compile "
        f"{_fmt(timing['compile_median_s'], '.1f')} s, publish (load back, canary, alias) "
        f"{_fmt(timing['publish_median_s'], '.2f')} s.",
    ]
    swap = results.get("swap")
    if swap:
        lines += [
            "",
            "## From promotion to the last worker swapping",
            "",
            f"{swap['workers']} `fraudstream worker` processes on a local broker, a trickle "
            f"of traffic ({TRICKLE_RATE:.0f} transactions/s); {swap['repeats']} promotions "
            "announced on `model-updates` after one warm-up promotion (not counted); each "
            "worker's `/metrics` polled every 20 ms. The time includes the announcement "
            "(alias moved → acknowledged by the broker, a new idempotent producer each time as "
            f"the trainer does: median {swap['announce_median_s']:.2f} s), the worker's digest "
            "check, load, canary and the swap between two batches.",
            "",
            "| | min | median | max |",
            "|---|---:|---:|---:|",
            f"| alias moved → last worker serving it (s) | {swap['min_s']:.2f} | "
            f"{swap['median_s']:.2f} | {swap['max_s']:.2f} |",
            "",
            "| promotion | alias moved → announced (s) | → each worker serving it (s) |",
            "|---|---:|---|",
            *[
                f"| {x['version']}{' (warm-up, not counted)' if x['warm_up'] else ''} | "
                f"{x['announce_seconds']:.2f} | "
                f"{', '.join(f'{v:.2f}' for v in x['per_worker_seconds'])} |"
                for x in swap["samples"]
            ],
        ]
    text = "\n".join(lines) + "\n"
    (out / f"{NAME}.md").write_text(text)
    _plot(results, out / f"{NAME}.png")
    return text


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    walk = results["accuracy"]
    days = [d["day"] for d in walk["days"]]
    typology_day = walk["simulation"]["new_typology_day"]
    fig, (ax, bars) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    attack = [d["day"] for d in walk["days"] if d["new_typology_frauds"] > 0]
    for arm, color in (("frozen", "#c0504d"), ("incremental", "#3b75af")):
        values = [d[f"{arm}_ap"] for d in walk["days"]]
        ax.plot(days, values, marker="o", ms=3, color=color, label=f"{arm} (daily AP)")
        ax.plot(attack, [d[f"{arm}_ap"] for d in walk["days"] if d["day"] in attack], "s",
                ms=6, color=color, mfc="none")  # fmt: skip
    if typology_day is not None:
        ax.plot([], [], "s", mfc="none", color="gray", label="attack days (new typology)")
        ax.axvline(typology_day - 0.5, color="black", ls="--", lw=1)
        ax.text(typology_day - 0.4, 0.02, f"{walk['simulation']['new_typology']} starts",
                fontsize=8, va="bottom")  # fmt: skip
    first = True
    for r in walk["rounds"]:
        if r["outcome"] == "promoted":
            ax.axvline(r["day"] - 0.5, color="#3b75af", ls=":", lw=1.2,
                       label="promotion (serves from this day; data until day n)"
                       if first else None)  # fmt: skip
            ax.text(r["day"] - 0.45, 0.98, f"{r['trained_until_day']:.0f}", fontsize=7,
                    va="top", color="#3b75af")  # fmt: skip
            first = False
    recovered = results["recovery"]["recovered_on_day"]
    if recovered is not None and typology_day is not None:
        ax.axvspan(typology_day - 0.5, recovered - 0.5, color="#f0e0a0", alpha=0.4,
                   label=f"until recovered ({recovered - typology_day} days)")  # fmt: skip
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.arange(0, 1.01, 0.2))
    ax.set_ylabel("average precision")
    ax.set_title(
        "Average precision per day: frozen model vs incremental trainer"
        + ("" if typology_day is not None else f" ({walk['simulation'].get('source', 'log')})")
    )
    ax.legend(loc="upper center", fontsize=8, ncol=3, framealpha=0.9)
    total = [d["frauds"] for d in walk["days"]]
    new = [d["new_typology_frauds"] for d in walk["days"]]
    bars.bar(days, total, color="#999999", label="frauds")
    bars.bar(days, new, color="#e39c3a", label="of the new typology")
    bars.set_ylabel("frauds")
    bars.set_xlabel("simulated day")
    bars.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timing(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def median(values: list[float]) -> float | None:
        return float(np.median(values)) if values else None

    trained = [r for r in rounds if "fit_fresh" in r["seconds"]]
    promoted = [r for r in rounds if r["outcome"] == "promoted"]
    return {
        "rounds": len(trained),
        "promotions": len(promoted),
        "fit_continued_median_s": median([r["seconds"]["fit_continued"] for r in trained]),
        "fit_fresh_median_s": median([r["seconds"]["fit_fresh"] for r in trained]),
        "evaluate_median_s": median([r["seconds"].get("evaluate", 0.0) for r in trained]),
        "register_median_s": median([r["seconds"]["register"] for r in promoted]),
        "compile_median_s": median(
            [r["compile_seconds"] for r in promoted if r["compile_seconds"] is not None]
        ),
        "publish_median_s": median([r["seconds"]["publish"] for r in promoted]),
    }


def main(
    days: int = typer.Option(50, help="Simulated days."),
    cards: int = typer.Option(2000, help="Simulated cards (about 1.65 transactions a day each)."),
    typology_day: int = typer.Option(28, help="Day the new typology (bin_attack) starts."),
    fraud_rate: float = typer.Option(0.01, help="Share of fraudulent transactions."),
    typology_share: float = typer.Option(
        0.4, help="The new typology's share of the fraud budget once ramped up (3 days)."
    ),
    label_delay_days: float = typer.Option(
        7.0, help="Latest fraud report (days); the trainer's label maturity is the same."
    ),
    champion_days: int = typer.Option(14, help="Days the first champion is trained on."),
    window_days: float = typer.Option(14.0, help="Trainer window (days)."),
    eval_days: float = typer.Option(3.0, help="Trainer holdout (days)."),
    lead: float = typer.Option(
        0.1, help="Recovery: the AP lead over the frozen model on every attack day from then on."
    ),
    swap: bool = typer.Option(True, help="Measure promotion → worker swap on a real broker."),
    workers: int = typer.Option(2, help="Workers in the swap runs."),
    swap_repeats: int = typer.Option(5, help="Promotions timed in the swap runs."),
    seed: int = typer.Option(5),
    out: Path = typer.Option(RESULTS, help="Results directory."),  # noqa: B008 -- typer's idiom
    log_transactions: Path | None = typer.Option(  # noqa: B008
        None,
        "--transactions",
        help="Walk this log instead of the simulator (its first --days "
        "days; no typology: no recovery, only frozen vs incremental day by day).",
    ),
    log_labels: Path | None = typer.Option(None, "--labels", help="Labels for --transactions."),  # noqa: B008
) -> None:
    began = time.perf_counter()
    log = None
    if log_transactions is not None:
        if log_labels is None:
            raise typer.BadParameter("--transactions needs --labels", param_hint="--labels")
        from scoring.logs import read_labels, read_transactions

        log = (read_transactions(log_transactions), read_labels(log_labels),
               f"log {log_transactions.name} + {log_labels.name}")  # fmt: skip
        typology_day_arg: int | None = None
    else:
        typology_day_arg = typology_day
    training = TrainingSettings(
        label_maturity_days=label_delay_days,
        window_days=window_days,
        eval_days=eval_days,
        retrain_interval_hours=24,  # a round every simulated day (the default schedule)
    )
    with tempfile.TemporaryDirectory(prefix="fraudstream-incremental-") as tmp:
        work = Path(tmp)
        walk = accuracy_walk(
            days=days, cards=cards, typology_day=typology_day, fraud_rate=fraud_rate,
            label_delay_days=label_delay_days, typology_share=typology_share,
            champion_days=champion_days, training=training,
            seed=seed, work=work, log=log,
        )  # fmt: skip
        swapped = None
        if swap:
            swapped = swap_latency(Path(walk["registry"]), walk["versions"], workers,
                                   swap_repeats, work, seed)  # fmt: skip
    command = " ".join(["python benchmarks/incremental_training.py", *sys.argv[1:]])
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "run_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "wall_minutes": (time.perf_counter() - began) / 60,
        "champion_days": champion_days,
        "training": training.model_dump(),
        "accuracy": walk,
        "recovery": recovery(walk["days"], walk["rounds"], typology_day_arg, lead),
        "round_timing": _timing(walk["rounds"]),
        "swap": swapped,
    }
    print(write_reports(results, out))


if __name__ == "__main__":
    typer.run(main)
