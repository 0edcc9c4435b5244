"""The incremental trainer without Kafka: the join, maturity, the window, the promotion rule.

``tests/integration/test_trainer.py`` runs it against the real broker with a real worker.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from scoring.decision import BankPolicy, DecisionPolicy
from scoring.features import NUM_FEATURES
from scoring.logs import LABEL_SCHEMA, TIMESTAMP, TRANSACTION_SCHEMA
from scoring.settings import Settings, TrainingSettings
from training.trainer_kafka import decode_feature_log
from training.trainer_rounds import (
    CARD_PRECISION,
    COST,
    DAY_MS,
    DECLINE_RATE,
    HOUR_MS,
    NO_CHALLENGER,
    NOT_BETTER,
    REVIEW_RATE,
    PromotionRules,
    Scorecard,
    decide,
    evaluate,
    judge,
    plan_round,
    retrain_due,
)
from training.trainer_state import RowSet, WindowStore, key_transaction_id, row_key

T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z


# ------------------------------------------------------------------------------------ helpers


def transactions(rows: list[dict[str, Any]]) -> pa.Table:
    """Canonical transaction table (what scoring.wire.decode_transactions returns)."""
    columns: dict[str, Any] = {}
    for field in TRANSACTION_SCHEMA:
        values = [r.get(field.name) for r in rows]
        if field.name == "timestamp":
            columns["timestamp"] = pa.array(values, pa.int64()).cast(TIMESTAMP)
        else:
            columns[field.name] = pa.array(values, field.type)
    return pa.table(columns, schema=TRANSACTION_SCHEMA)


def tx(
    tid: str, ts: int, *, bank: str | None = "b1", card: str = "c1", amount: float = 10.0
) -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "bank_id": bank,
        "card_id": card,
        "timestamp": ts,
        "amount": amount,
        "merchant_id": "m1",
        "country": "FR",
    }


def labels(rows: list[tuple[str, bool, int, str | None]]) -> pa.Table:
    return pa.table(
        {
            "transaction_id": pa.array([r[0] for r in rows], pa.string()),
            "is_fraud": pa.array([r[1] for r in rows], pa.bool_()),
            "reported_at": pa.array([r[2] for r in rows], pa.int64()).cast(TIMESTAMP),
            "bank_id": pa.array([r[3] for r in rows], pa.string()),
            "source": pa.array([None] * len(rows), pa.string()),
        },
        schema=LABEL_SCHEMA,
    )


def vector(value: float) -> np.ndarray:
    row = np.full(NUM_FEATURES, value)
    row[3] = np.nan  # a missing feature travels as null/NaN
    return row


def features(
    store: WindowStore, ids: list[str], banks: list[str | None], values: list[float]
) -> int:
    X = np.stack([vector(v) for v in values]) if values else np.empty((0, NUM_FEATURES))
    return store.add_features(
        ids, banks, X, np.asarray(values) / 100, ["v0001-aaaaaaaa"] * len(ids)
    )


def row_of(store: WindowStore, bank: str | None, tid: str) -> int:
    return store.index[row_key(bank, tid)]


# ------------------------------------------------------------------------------------ the join


def test_feature_row_first_or_transaction_first_give_the_same_joined_row() -> None:
    a, b = WindowStore(), WindowStore()
    a.add_transactions(transactions([tx("t1", T0)]))
    features(a, ["t1"], ["b1"], [5.0])
    features(b, ["t1"], ["b1"], [5.0])
    assert b.counts(T0, 0).unjoined == 1  # waiting for its transaction
    b.add_transactions(transactions([tx("t1", T0)]))
    for store in (a, b):
        counts = store.counts(T0 + DAY_MS, DAY_MS)
        assert (counts.joined, counts.unjoined) == (1, 0)
        rows = store.rows(store.usable(T0 + 2 * DAY_MS, DAY_MS), T0 + 2 * DAY_MS)
        assert len(rows) == 1 and rows.ts_ms[0] == T0 and rows.amount[0] == 10.0
        np.testing.assert_array_equal(rows.X[0], vector(5.0))  # exactly the scored vector
        assert rows.model_version[0] == "v0001-aaaaaaaa"


def test_labels_before_their_feature_row_and_transaction_are_applied_when_they_arrive() -> None:
    store = WindowStore()
    store.add_labels(labels([("t1", True, T0 + HOUR_MS, "b1"), ("t2", True, T0 + HOUR_MS, None)]))
    store.add_transactions(transactions([tx("t1", T0), tx("t2", T0, bank="b2")]))
    features(store, ["t1", "t2"], ["b1", "b2"], [1.0, 2.0])
    clock = T0 + 3 * DAY_MS
    rows = store.rows(store.usable(clock, DAY_MS), clock)
    assert rows.y.tolist() == [1, 1]
    assert store.fraud_labels == {}  # applied, no longer waiting


def test_labels_after_the_row_and_the_bank_rules() -> None:
    store = WindowStore()
    # the same id in two banks, and one bankless transaction
    store.add_transactions(
        transactions([tx("t1", T0, bank="b1"), tx("t1", T0, bank="b2"), tx("t9", T0, bank=None)])
    )
    features(store, ["t1", "t1", "t9"], ["b1", "b2", None], [1.0, 2.0, 3.0])
    store.add_labels(labels([("t1", True, T0 + HOUR_MS, "b2")]))  # names b2: only b2's
    clock = T0 + 3 * DAY_MS
    assert store.targets(np.array([row_of(store, "b1", "t1")]), clock).tolist() == [0]
    assert store.targets(np.array([row_of(store, "b2", "t1")]), clock).tolist() == [1]
    store.add_labels(labels([("t9", True, T0 + HOUR_MS, "b1")]))  # another bank's t9: no match
    assert store.targets(np.array([row_of(store, None, "t9")]), clock).tolist() == [0]
    store.add_labels(labels([("t9", True, T0 + HOUR_MS, None)]))  # no bank: matches any
    assert store.targets(np.array([row_of(store, None, "t9")]), clock).tolist() == [1]


def test_any_fraud_label_wins_and_genuine_labels_change_nothing() -> None:
    store = WindowStore()
    store.add_transactions(transactions([tx("t1", T0), tx("t2", T0)]))
    features(store, ["t1", "t2"], ["b1", "b1"], [1.0, 2.0])
    store.add_labels(
        labels([("t1", False, T0 + HOUR_MS, "b1"), ("t1", True, T0 + 2 * HOUR_MS, "b1")])
    )
    store.add_labels(
        labels([("t2", True, T0 + 3 * HOUR_MS, "b1"), ("t2", False, T0 + 4 * HOUR_MS, "b1")])
    )
    rows = np.array([row_of(store, "b1", "t1"), row_of(store, "b1", "t2")])
    assert store.targets(rows, T0 + DAY_MS).tolist() == [1, 1]
    # a fraud label counts from its report time: before it, the transaction was not known as fraud
    assert store.targets(rows, T0 + 2 * HOUR_MS - 1).tolist() == [0, 0]
    assert store.targets(rows, T0 + 2 * HOUR_MS).tolist() == [1, 0]
    assert store.genuine_labels == 2 and store.fraud_label_count == 2


def test_duplicates_keep_the_first_record() -> None:
    store = WindowStore()
    store.add_transactions(transactions([tx("t1", T0, amount=1.0), tx("t1", T0 + 5, amount=2.0)]))
    store.add_transactions(transactions([tx("t1", T0 + 9, amount=3.0)]))
    assert features(store, ["t1", "t1"], ["b1", "b1"], [1.0, 2.0]) == 1
    assert features(store, ["t1"], ["b1"], [3.0]) == 0
    assert store.size == 1
    assert store.duplicate_transactions == 2 and store.duplicate_features == 2
    row = row_of(store, "b1", "t1")
    assert store.amount[row] == 1.0 and store.ts_ms[row] == T0
    np.testing.assert_array_equal(store.features[row], vector(1.0))


def test_row_keys_are_unambiguous() -> None:
    assert row_key("ab", "c") != row_key("a", "bc")
    assert row_key(None, "t1") == row_key("", "t1")
    for bank, tid in (("b1", "x:y"), (None, "3:abc"), ("b:2", "t")):
        assert key_transaction_id(row_key(bank, tid)) == tid


# ------------------------------------------------------------------------------------ maturity


def test_no_negatives_younger_than_maturity_and_young_frauds_wait_too() -> None:
    store = WindowStore()
    maturity = 2 * DAY_MS
    times = [T0, T0 + DAY_MS, T0 + 2 * DAY_MS, T0 + 3 * DAY_MS]
    ids = [f"t{i}" for i in range(len(times))]
    store.add_transactions(transactions([tx(i, t) for i, t in zip(ids, times, strict=True)]))
    features(store, ids, ["b1"] * 4, [1.0, 2.0, 3.0, 4.0])
    store.add_labels(labels([("t3", True, T0 + 3 * DAY_MS + HOUR_MS, "b1")]))  # young, fraud
    clock = T0 + 3 * DAY_MS + 2 * HOUR_MS
    usable = store.usable(clock, maturity)
    rows = store.rows(usable, clock)
    assert rows.ts_ms.tolist() == [T0, T0 + DAY_MS]  # strictly older than clock − maturity
    assert rows.y.tolist() == [0, 0]
    assert store.counts(clock, maturity).matured == 2
    # exactly at the horizon is not yet matured; one millisecond later it is
    assert len(store.usable(T0 + 2 * DAY_MS + 2 * DAY_MS, maturity)) == 2
    assert len(store.usable(T0 + 2 * DAY_MS + 2 * DAY_MS + 1, maturity)) == 3
    later = T0 + 6 * DAY_MS
    assert store.rows(store.usable(later, maturity), later).y.tolist() == [0, 0, 0, 1]


def test_unjoined_rows_are_never_usable() -> None:
    store = WindowStore()
    store.add_transactions(transactions([tx("t1", T0)]))  # no feature vector: never scored
    features(store, ["t2"], ["b1"], [1.0])  # no transaction: no time
    assert len(store.usable(T0 + 100 * DAY_MS, DAY_MS)) == 0


# ------------------------------------------------------------------------------------ window


def test_window_is_bounded_and_compaction_keeps_rows_intact() -> None:
    store = WindowStore(capacity=16)
    n = 200
    ids = [f"t{i}" for i in range(n)]
    times = [T0 + i * HOUR_MS for i in range(n)]
    store.add_transactions(
        transactions(
            [tx(i, t, card=f"c{k % 7}") for k, (i, t) in enumerate(zip(ids, times, strict=True))]
        )
    )
    features(store, ids, ["b1"] * n, [float(i) for i in range(n)])
    store.add_labels(labels([(ids[i], True, times[i] + HOUR_MS, "b1") for i in range(0, n, 10)]))
    store.add_labels(labels([("unknown", True, T0, "b1")]))  # waits for a row forever...
    assert store.capacity >= n
    cut = times[120]
    dropped = store.evict(cut)
    assert dropped == 120 and store.size == 80
    assert "unknown" not in {key_transaction_id(k) for k in store.fraud_labels}  # ...until evicted
    clock = times[-1] + 10 * DAY_MS
    rows = store.rows(store.usable(clock, DAY_MS), clock)
    assert rows.ts_ms.tolist() == times[120:]
    np.testing.assert_array_equal(rows.X[:, 0], np.arange(120, n, dtype=float))
    assert rows.y.tolist() == [1 if i % 10 == 0 else 0 for i in range(120, n)]
    # the index points at the moved rows
    for i in (120, 150, 199):
        assert store.ts_ms[row_of(store, "b1", ids[i])] == times[i]
    # rows added after a compaction land in clean slots
    store.add_transactions(transactions([tx("late", times[-1] + 1)]))
    assert store.fraud_ms[row_of(store, "b1", "late")] == np.iinfo(np.int64).max


def test_rows_without_their_transaction_are_dropped_after_a_grace_period() -> None:
    store = WindowStore()
    store.add_features(["t1"], ["b1"], vector(1.0)[None, :], np.zeros(1), ["v"], kafka_ms=1_000)
    store.add_features(["t2"], ["b1"], vector(2.0)[None, :], np.zeros(1), ["v"], kafka_ms=9_000)
    assert store.evict(T0, orphans_seen_before_ms=5_000) == 1
    assert list(store.index) == [row_key("b1", "t2")] and store.evicted_orphans == 1


# ------------------------------------------------------------------------------------ feature log


def test_feature_log_records_decode_with_nulls_and_bad_ones_are_skipped() -> None:
    @dataclass
    class Record:
        payload: bytes

        def value(self) -> bytes:
            return self.payload

        def timestamp(self) -> tuple[int, int]:
            return (1, 42)

    good = [None if i == 3 else float(i) for i in range(NUM_FEATURES)]
    records = [
        Record(
            orjson.dumps(
                {
                    "transaction_id": "t1",
                    "bank_id": "b1",
                    "model_version": "v1",
                    "score": 0.5,
                    "features": good,
                    "timestamp_ms": T0,
                    "shadow_score": 0.1,
                }
            )
        ),
        Record(b"not json"),
        Record(orjson.dumps({"transaction_id": "t2", "features": [1.0, 2.0]})),
        Record(orjson.dumps({"transaction_id": "t3", "features": ["x"] * NUM_FEATURES})),
        Record(orjson.dumps({"transaction_id": "t4", "bank_id": None, "features": good})),
    ]
    decoded = decode_feature_log(records)  # type: ignore[arg-type]
    assert decoded.transaction_ids == ["t1", "t4"] and decoded.rejected == 3
    assert decoded.bank_ids == ["b1", None] and decoded.model_versions == ["v1", None]
    assert math.isnan(decoded.features[0, 3]) and decoded.features[0, 4] == 4.0
    assert decoded.kafka_ms.tolist() == [42, 42]
    assert decoded.scores[0] == 0.5 and math.isnan(decoded.scores[1])


# ------------------------------------------------------------------------------------ plan


def test_the_holdout_is_the_latest_matured_period_no_model_trained_on() -> None:
    training = TrainingSettings(label_maturity_days=3, window_days=20, eval_days=4)
    clock = T0 + 30 * DAY_MS
    horizon = clock - 3 * DAY_MS
    plan = plan_round(clock, training, champion_until_ms=T0 + 10 * DAY_MS)
    assert plan is not None
    assert plan.horizon_ms == horizon
    assert plan.holdout_start_ms == horizon - 4 * DAY_MS
    assert plan.window_start_ms == horizon - 20 * DAY_MS
    assert plan.continue_from_ms == T0 + 10 * DAY_MS  # the data the champion has not seen
    # a champion trained until one day before the horizon: the holdout shrinks to that day
    recent = plan_round(clock, training, champion_until_ms=horizon - DAY_MS)
    assert recent is not None and recent.holdout_start_ms == horizon - DAY_MS
    # ... and with nothing matured after its window, there is no round
    assert plan_round(clock, training, champion_until_ms=horizon) is None
    # an old champion: continued boosting starts at the window
    old = plan_round(clock, training, champion_until_ms=T0 - 100 * DAY_MS)
    assert old is not None and old.continue_from_ms == old.window_start_ms


def test_retrain_is_due_by_count_or_by_event_time() -> None:
    training = TrainingSettings(retrain_every_labels=100, retrain_interval_hours=24)
    assert retrain_due(100, 0, training)
    assert not retrain_due(99, 23 * HOUR_MS, training)
    assert retrain_due(1, 24 * HOUR_MS, training)
    assert not retrain_due(0, 240 * HOUR_MS, training)  # nothing new: nothing to learn
    assert not retrain_due(99, 240 * HOUR_MS, replace_training(training, retrain_interval_hours=0))


def replace_training(training: TrainingSettings, **changes: Any) -> TrainingSettings:
    return training.model_copy(update=changes)


# ------------------------------------------------------------------------------------ the rule


CHAMPION = Scorecard(
    transactions=10_000,
    frauds=50,
    average_precision=0.50,
    auc_roc=0.9,
    card_precision_at_k=0.30,
    cost_per_transaction=1.00,
    decline_rate=0.010,
    review_rate=0.005,
)
RULES = PromotionRules(
    margin=0.01,
    max_cost_increase=0.0,
    max_card_precision_drop=0.02,
    max_decline_rate_increase=0.02,
    max_review_rate_increase=0.01,
)


def card(**changes: float) -> Scorecard:
    return replace(CHAMPION, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (card(average_precision=0.515), None),
        (card(average_precision=0.51), None),  # exactly the margin
        (card(average_precision=0.509), NOT_BETTER),
        (card(average_precision=math.nan), NOT_BETTER),
        (card(average_precision=0.6, cost_per_transaction=1.01), COST),
        (card(average_precision=0.6, card_precision_at_k=0.279), CARD_PRECISION),
        (card(average_precision=0.6, card_precision_at_k=0.28), None),
        (card(average_precision=0.6, decline_rate=0.031), DECLINE_RATE),
        (card(average_precision=0.6, decline_rate=0.03), None),
        (card(average_precision=0.6, review_rate=0.0151), REVIEW_RATE),
        (card(average_precision=0.6, cost_per_transaction=0.5, decline_rate=0.0), None),
    ],
)
def test_promotion_needs_the_margin_and_every_guardrail(
    candidate: Scorecard, reason: str | None
) -> None:
    got, why = judge(candidate, CHAMPION, RULES)
    assert got == reason, why
    assert why  # always says why


def test_cost_tolerance_is_relative_to_the_champion() -> None:
    loose = replace(RULES, max_cost_increase=0.05)
    assert judge(card(average_precision=0.6, cost_per_transaction=1.05), CHAMPION, loose)[0] is None
    assert (
        judge(card(average_precision=0.6, cost_per_transaction=1.051), CHAMPION, loose)[0] == COST
    )


def test_decide_takes_the_best_passing_challenger_or_reports_the_best_ones_reason() -> None:
    both = {"continued": card(average_precision=0.58), "fresh": card(average_precision=0.62)}
    assert decide(CHAMPION, both, RULES).winner == "fresh"
    # the better one breaks a guardrail: the other one still gets promoted
    guarded = {**both, "fresh": card(average_precision=0.62, decline_rate=0.5)}
    verdict = decide(CHAMPION, guarded, RULES)
    assert verdict.winner == "continued" and verdict.judged["fresh"][0] == DECLINE_RATE
    # none passes: the reason is the best one's, and the verdict says which
    none = {
        "continued": card(average_precision=0.505),
        "fresh": card(average_precision=0.7, review_rate=0.5),
    }
    verdict = decide(CHAMPION, none, RULES)
    assert (verdict.winner, verdict.reason) == (None, REVIEW_RATE)
    assert verdict.detail.startswith("fresh:")
    impossible = replace(RULES, margin=1.0)
    assert decide(CHAMPION, both, impossible).reason == NOT_BETTER
    assert decide(CHAMPION, {}, RULES).reason == NO_CHALLENGER


# ------------------------------------------------------------------------------------ evaluation


def rowset(
    y: list[int], *, banks: list[str | None], amounts: list[float], days: list[int]
) -> RowSet:
    n = len(y)
    return RowSet(
        X=np.zeros((n, NUM_FEATURES)),
        y=np.asarray(y, np.int8),
        ts_ms=np.asarray([T0 + d * DAY_MS for d in days], np.int64),
        amount=np.asarray(amounts, float),
        bank=np.asarray(banks, dtype=object),
        card=np.arange(n, dtype=np.int32),
        card_id=np.asarray([f"c{i}" for i in range(n)], dtype=object),
        merchant=np.asarray([None] * n, dtype=object),
        country=np.asarray([None] * n, dtype=object),
        model_version=np.asarray(["v"] * n, dtype=object),
    )


def test_evaluate_uses_each_banks_policy_for_decisions_and_cost() -> None:
    holdout = rowset(
        [1, 0, 0, 1], banks=["b1", "b1", "b2", None], amounts=[100.0] * 4, days=[0, 0, 1, 1]
    )
    scores = np.array([0.9, 0.5, 0.5, 0.01])
    # b2 never declines (friction 100 %), the default declines at p > ~0.02
    policy = DecisionPolicy(banks={"b2": BankPolicy(friction_share=1.0, review_cost=1000.0)})
    got = evaluate(scores, holdout, policy, k=1)
    assert got.transactions == 4 and got.frauds == 2
    assert got.decline_rate == 0.5  # b1's two; b2 approves; the bankless one is approved (p low)
    assert got.review_rate == 0.0
    # realised: b1 fraud declined (0) + b1 genuine declined (2 % friction = 2) + b2 approved
    # genuine (0) + missed fraud (100): 102 / 4
    assert got.cost_per_transaction == pytest.approx(102.0 / 4)
    assert got.average_precision == pytest.approx(1.0 / 2 * (1.0 + 2.0 / 4))
    assert got.card_precision_at_k == pytest.approx(0.5)  # day 0: the fraud card; day 1: none


# ------------------------------------------------------------------------------------ metrics


def test_trainer_metrics_match_metrics_md() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from training.trainer_metrics import TrainerMetrics

    repo = Path(__file__).resolve().parents[2]
    rows: dict[str, tuple[str, str]] = {}
    for line in (repo / "deploy/helm/fraudstream/METRICS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`fraudstream_") and "trainer" in cells[3]:
            rows[cells[0].strip("`")] = (cells[1].split()[0], cells[2])
    exported: dict[str, tuple[str, set[str]]] = {}
    for metric in vars(TrainerMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            exported[name] = (family.type, set(metric._labelnames))
    assert set(exported) == set(rows)
    for name, (kind, labels_) in exported.items():
        assert rows[name][0] == kind, name
        outside = re.sub(r"\([^)]*\)", "", rows[name][1])
        assert set(re.findall(r"`([a-z_]+)`", outside)) == labels_, name


def test_settings_reach_the_trainer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_TRAINING__PROMOTE_MARGIN", "1")
    monkeypatch.setenv("FRAUD_TRAINING__EVAL_DAYS", "2.5")
    training = Settings().training
    assert training.promote_margin == 1.0 and training.eval_days == 2.5
    assert training.http_port == 8002 and training.num_threads == 1


def test_datetime_helpers_agree_with_epoch_constants() -> None:
    assert datetime.fromtimestamp(T0 / 1000, UTC) == datetime(2026, 1, 5, tzinfo=UTC)
    assert timedelta(milliseconds=DAY_MS) == timedelta(days=1)


# ------------------------------------------------------------------------------------ rounds


class Simulated:
    """Eight simulated days scored offline (the same features the worker would log), a weak
    champion trained on the first two, in a registry."""

    def __init__(self, root: Path) -> None:
        from scoring.features import FEATURE_NAMES, FeatureEngine, replay_log
        from scoring.registry import ModelRegistry
        from training.dataset import build_training_set
        from training.fit import fit
        from training.simulator import SimulationConfig, simulate

        config = SimulationConfig(
            days=8, cards=1200, seed=3, fraud_rate=0.01, max_label_delay_days=1,
            label_maturity_days=1,
        )  # fmt: skip
        self.transactions, self.labels = simulate(config)
        self.features = replay_log(self.transactions, self.labels, engine=FeatureEngine())
        self.start = config.start
        until = config.start + timedelta(days=2)
        data = build_training_set(self.transactions, self.labels, until=until)
        weak = fit(data.X, data.y, data.timestamp_ms, feature_names=list(FEATURE_NAMES),
                   grid=({"num_leaves": 7, "min_data_in_leaf": 50},), max_trees=20)  # fmt: skip
        self.registry_dir = root / "registry"
        registry = ModelRegistry(self.registry_dir)
        self.weak = registry.register(
            weak.booster, feature_names=list(FEATURE_NAMES), params=weak.params,
            window=(config.start, until),
        ).version  # fmt: skip
        registry.promote(self.weak)
        self.clock_ms = int(self.transactions["timestamp"].cast(pa.int64()).to_numpy().max())

    def registry(self, root: Path) -> Any:
        import shutil

        from scoring.registry import ModelRegistry

        copy = root / "registry"
        shutil.copytree(self.registry_dir, copy)
        return ModelRegistry(copy)

    def store(self) -> WindowStore:
        from scoring.wire import decode_labels, encode_labels

        store = WindowStore()
        store.add_transactions(self.transactions)
        n = self.transactions.num_rows
        store.add_features(
            self.transactions["transaction_id"].to_pylist(),
            self.transactions["bank_id"].to_pylist(),
            self.features,
            np.zeros(n),
            [self.weak] * n,
        )
        store.add_labels(decode_labels(encode_labels(self.labels))[0])
        return store


ROUND_SETTINGS = TrainingSettings(
    label_maturity_days=1, window_days=6, eval_days=2, min_eval_frauds=10, max_trees=40,
    continue_trees=20, max_decline_rate_increase=1.0, max_review_rate_increase=1.0,
    max_card_precision_drop=1.0, max_cost_increase=1.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    return Simulated(tmp_path_factory.mktemp("simulated"))


@pytest.mark.slow
def test_a_round_promotes_a_better_challenger_with_a_complete_manifest(
    simulated: Simulated, tmp_path: Path
) -> None:
    from scoring.registry import ModelRegistry
    from training.trainer_rounds import RoundInputs, run_round

    registry: ModelRegistry = simulated.registry(tmp_path)
    store = simulated.store()
    until = registry.get("champion").window.until
    assert until is not None
    plan = plan_round(simulated.clock_ms, ROUND_SETTINGS, round(until.timestamp() * 1000))
    assert plan is not None
    data = store.rows(store.usable(simulated.clock_ms, DAY_MS, plan.window_start_ms),
                      simulated.clock_ms)  # fmt: skip
    stages: list[str] = []
    result = run_round(RoundInputs(data, plan), registry, ROUND_SETTINGS, DecisionPolicy(),
                       on_stage=stages.append)  # fmt: skip
    assert result.outcome == "promoted", result.detail
    assert stages == ["fit_continued", "fit_fresh", "evaluate", "register", "publish"]
    assert registry.resolve("champion") == result.promoted != simulated.weak
    manifest = registry.get(result.promoted or "")
    assert manifest.parent == simulated.weak
    assert manifest.window.until is not None
    assert round(manifest.window.until.timestamp() * 1000) == plan.holdout_start_ms
    assert manifest.params["kind"] == result.challenger
    if result.challenger == "continued":
        assert manifest.params["init_model"] == simulated.weak
        assert manifest.window.from_ == registry.get(simulated.weak).window.from_
    assert set(manifest.params["drift_reference"]) >= {"amount", "score"}
    metrics = manifest.metrics
    assert (
        metrics["holdout_average_precision"]
        == result.scorecards[result.challenger or ""].average_precision
    )
    assert (
        metrics["champion_holdout_average_precision"]
        == result.scorecards["champion"].average_precision
    )
    assert metrics["holdout_frauds"] >= ROUND_SETTINGS.min_eval_frauds
    assert set(manifest.artifacts) == {"model.txt", "model.so"}
    # the announcement to publish names the move
    assert result.announcement is not None
    assert (result.announcement.version, result.announcement.previous_version) == (
        result.promoted, simulated.weak,
    )  # fmt: skip
    assert result.announcement.manifest_digest == manifest.digest()


@pytest.mark.slow
def test_rounds_refuse_with_a_reason_and_publish_nothing(
    simulated: Simulated, tmp_path: Path
) -> None:
    from training.trainer_rounds import INTEGRITY, TOO_FEW_LABELS, RoundInputs, run_round

    registry = simulated.registry(tmp_path)
    store = simulated.store()
    until = registry.get("champion").window.until
    plan = plan_round(simulated.clock_ms, ROUND_SETTINGS, round(until.timestamp() * 1000))
    assert plan is not None
    data = store.rows(store.usable(simulated.clock_ms, DAY_MS, plan.window_start_ms),
                      simulated.clock_ms)  # fmt: skip
    versions = len(registry.list())

    strict = ROUND_SETTINGS.model_copy(update={"promote_margin": 1.0})
    result = run_round(RoundInputs(data, plan), registry, strict, DecisionPolicy())
    assert (result.outcome, result.reason) == ("refused", NOT_BETTER)
    assert "margin 1" in result.detail and set(result.scorecards) >= {"champion", "fresh"}
    picky = ROUND_SETTINGS.model_copy(update={"min_eval_frauds": 100_000})
    result = run_round(RoundInputs(data, plan), registry, picky, DecisionPolicy())
    assert (result.reason, result.scorecards) == (TOO_FEW_LABELS, {})
    assert len(registry.list()) == versions and registry.resolve("champion") == simulated.weak

    # a champion whose artifacts do not match their digests is not built on
    library = registry.storage.root / "versions" / simulated.weak / "model.so"  # type: ignore[attr-defined]
    library.chmod(0o644)
    library.write_bytes(library.read_bytes() + b"\0")
    result = run_round(RoundInputs(data, plan), registry, ROUND_SETTINGS, DecisionPolicy())
    assert (result.reason, result.integrity_failure) == (INTEGRITY, True)
    assert registry.resolve("champion") == simulated.weak


@dataclass
class FakeMessage:
    """What the trainer's loop reads of a confluent_kafka.Message."""

    topic_: str
    partition_: int
    payload: bytes | None
    kafka_ms: int = 0
    error_: Any = None

    def error(self) -> Any:
        return self.error_

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def value(self) -> bytes | None:
        return self.payload

    def timestamp(self) -> tuple[int, int]:
        return (1, self.kafka_ms)


@pytest.mark.slow
def test_the_loop_joins_keeps_the_clock_and_triggers_rounds_on_matured_labels(
    simulated: Simulated, tmp_path: Path
) -> None:
    """The trainer's loop fed in-memory messages: transactions on two partitions, the feature log
    and the labels; caught up once every partition said end-of-partition; one round, refused
    with an impossible margin, and no second one until more labels mature."""
    from confluent_kafka import KafkaError

    from scoring.messages import feature_log_records
    from scoring.wire import encode_labels, encode_transactions
    from training.trainer import Trainer

    registry = simulated.registry(tmp_path)
    settings = Settings(
        training=ROUND_SETTINGS.model_copy(
            update={"promote_margin": 1.0, "retrain_every_labels": 5000}
        )
    )
    trainer = Trainer(settings, registry=registry.storage.root)  # type: ignore[attr-defined]
    topics = trainer.topics
    tx_table = simulated.transactions
    n = tx_table.num_rows

    @dataclass
    class Scored:  # what feature_log_records reads of a ScoredBatch
        transactions: pa.Table
        scores: np.ndarray
        features: np.ndarray
        model_version: str

    logged = feature_log_records(
        Scored(tx_table, np.zeros(n), simulated.features, simulated.weak)  # type: ignore[arg-type]
    )
    messages: list[FakeMessage] = []
    for i, value in enumerate(encode_transactions(tx_table)):
        messages.append(FakeMessage(topics["transactions"], i % 2, value, kafka_ms=1000))
    messages += [FakeMessage(topics["feature-log"], 0, r.value, 1000) for r in logged]
    messages += [FakeMessage(topics["labels"], 0, v) for v in encode_labels(simulated.labels)]
    messages.append(FakeMessage(topics["transactions"], 0, b"not a transaction"))
    trainer._eof = {(t, p): False for t in topics.values() for p in (0, 1)}
    # the feature log first: rows wait for their transactions
    order = [m for m in messages if m.topic_ == topics["feature-log"]] + [
        m for m in messages if m.topic_ != topics["feature-log"]
    ]
    for start in range(0, len(order), 5000):
        trainer._route(order[start : start + 5000])  # type: ignore[arg-type]
    assert not trainer.caught_up
    # the clock: the lowest of the partitions' newest event times
    ts = tx_table["timestamp"].cast(pa.int64()).to_numpy()
    assert trainer.clock_ms == min(ts[0::2].max(), ts[1::2].max())
    counts = trainer.store.counts(trainer.clock_ms or 0, DAY_MS)
    assert (counts.joined, counts.unjoined) == (n, 0)
    assert trainer.rejected["transactions"] == 1
    eof = KafkaError(KafkaError._PARTITION_EOF)
    trainer._route([FakeMessage(t, p, None, error_=eof) for t, p in trainer._eof])  # type: ignore[arg-type]
    assert trainer.caught_up and trainer._ready()[0]

    trainer._maybe_start_round()
    assert trainer._round is not None
    trainer._round.join(300)
    trainer._housekeeping()  # collects the finished round (and would start none: nothing new)
    assert trainer._round is None
    assert trainer.stats.rounds == 1 and trainer.stats.refusals == 1
    text = generate_latest(trainer)
    assert 'fraudstream_trainer_refusals_total{reason="not_better"} 1.0' in text
    assert "fraudstream_trainer_promotions_total 0.0" in text
    assert (
        'fraudstream_trainer_candidate_metric{candidate="champion",metric="average_precision"}'
        in text
    )
    assert registry.resolve("champion") == simulated.weak
    trainer._maybe_start_round()
    assert trainer._round is None  # the horizon has not moved: no new matured labels


def generate_latest(owner: Any) -> str:
    """/metrics of a Trainer or of TrainerMetrics."""
    from prometheus_client import generate_latest as render

    metrics = getattr(owner, "metrics", owner)
    return render(metrics.registry).decode()


@pytest.mark.parametrize(
    ("outcome", "reason", "success"),
    [
        ("promoted", None, True),
        ("refused", NOT_BETTER, True),
        ("refused", DECLINE_RATE, True),
        ("refused", "too_few_labels", False),
        ("refused", "integrity", False),
        ("refused", "canary", False),
        ("abandoned", None, False),
    ],
)
def test_last_success_means_a_verdict(outcome: str, reason: str | None, success: bool) -> None:
    from training.trainer_metrics import TrainerMetrics
    from training.trainer_rounds import RoundPlan, RoundResult

    metrics = TrainerMetrics()
    plan = RoundPlan(T0, T0, T0, T0, T0)
    result = RoundResult(outcome=outcome, reason=reason, detail="", plan=plan,
                         scorecards={"champion": CHAMPION}, seconds={"evaluate": 0.5})  # fmt: skip
    metrics.round_done(result, now=1234.0)
    text = generate_latest(metrics)
    assert ("fraudstream_trainer_last_success_timestamp_seconds 1234.0" in text) == success
    assert ("fraudstream_trainer_promotions_total 1.0" in text) == (outcome == "promoted")
    if outcome == "refused":
        assert f'fraudstream_trainer_refusals_total{{reason="{reason}"}} 1.0' in text
    assert 'fraudstream_trainer_stage_duration_seconds_count{stage="evaluate"} 1.0' in text
