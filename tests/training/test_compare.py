"""``fraudstream models compare`` without Kafka: reading shadow records, the maturity rule, the
join with transactions and labels, and metrics equal to training/evaluate.py's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from scoring.decision import BankPolicy, DecisionPolicy
from scoring.logs import LABEL_SCHEMA, TIMESTAMP, TRANSACTION_SCHEMA
from training.compare import ShadowLog, compare, select_rows, summary_lines
from training.evaluate import evaluate as offline_evaluate

T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
DAY = 86_400_000
HOUR = 3_600_000


def record(
    tid: str,
    ts: int | None,
    score: float,
    shadow: float | None,
    *,
    bank: str | None = "b1",
    version: str = "v1",
    shadow_version: str | None = "v2",
) -> bytes:
    row: dict[str, Any] = {
        "transaction_id": tid,
        "bank_id": bank,
        "model_version": version,
        "score": score,
        "features": [0.0, None],
    }
    if ts is not None:
        row["timestamp_ms"] = ts
    if shadow is not None or shadow_version is not None:
        row["shadow_model_version"] = shadow_version
        row["shadow_score"] = shadow
    return orjson.dumps(row)


def transactions(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, Any] = {}
    for field in TRANSACTION_SCHEMA:
        values = [r.get(field.name) for r in rows]
        if field.name == "timestamp":
            columns["timestamp"] = pa.array(values, pa.int64()).cast(TIMESTAMP)
        else:
            columns[field.name] = pa.array(values, field.type)
    return pa.table(columns, schema=TRANSACTION_SCHEMA)


def tx(
    tid: str, ts: int, *, bank: str | None = "b1", card: str = "c1", amount: float = 50.0
) -> dict[str, Any]:
    return {"transaction_id": tid, "bank_id": bank, "card_id": card, "timestamp": ts,
            "amount": amount, "merchant_id": "m1", "country": "FR"}  # fmt: skip


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


# ------------------------------------------------------------------------------ the feature log


def test_only_records_with_a_shadow_score_are_kept_and_bad_ones_are_counted() -> None:
    log = ShadowLog()
    log.add(
        [
            record("t1", T0, 0.1, 0.2),
            record("t2", T0, 0.3, None, shadow_version=None),  # no shadow model
            orjson.dumps({"transaction_id": "t3", "score": 0.3, "shadow_score": None}),  # null
            b'not json but has a "shadow_score"',
            orjson.dumps({"transaction_id": 7, "score": 0.1, "shadow_score": 0.2}),  # bad id
            orjson.dumps({"transaction_id": "t4", "score": "x", "shadow_score": 0.2}),
            orjson.dumps(["shadow_score"]),
            record("t1", T0 + 5, 0.9, 0.9),  # a duplicate keeps the first
            record("t1", T0, 0.4, 0.5, bank="b2"),  # another bank's t1 is another row
            None,  # type: ignore[list-item]
        ],
        partition=0,
    )
    assert log.records == 10
    assert log.transaction_id == ["t1", "t1"] and log.bank_id == ["b1", "b2"]
    assert log.score == [0.1, 0.4] and log.shadow_score == [0.2, 0.5]
    assert log.model_version == ["v1", "v1"] and log.shadow_model_version == ["v2", "v2"]
    assert (log.without_shadow, log.rejected, log.duplicates) == (3, 4, 1)


def test_the_clock_is_the_lowest_of_the_partitions_newest_times() -> None:
    log = ShadowLog()
    assert log.clock_ms() is None
    log.add([record("a", T0 + 10 * DAY, 0.1, 0.1), record("b", T0 + 2 * DAY, 0.1, 0.1)], 0)
    log.add([record("c", T0 + 5 * DAY, 0.1, 0.1)], 1)
    log.add([record("d", None, 0.1, 0.1)], 2)  # no time: the partition does not vote
    assert log.clock_ms() == T0 + 5 * DAY


# ------------------------------------------------------------------------------ the rows


def world() -> tuple[ShadowLog, pa.Table, pa.Table]:
    """Day 0–9 transactions, clock at day 10, maturity 3 days."""
    log = ShadowLog()
    txs = []
    values = []
    for i in range(10):
        ts = T0 + i * DAY
        txs.append(tx(f"t{i}", ts, card=f"c{i % 3}"))
        values.append(record(f"t{i}", ts, score=i / 10, shadow=1 - i / 10))
    log.add(values, 0)
    log.add([record("late", T0 + 10 * DAY, 0.5, 0.5)], 0)  # sets the clock; its tx never read
    frauds = labels(
        [
            ("t1", True, T0 + 1 * DAY + HOUR, "b1"),
            ("t8", True, T0 + 8 * DAY + HOUR, None),  # young, but a fraud: counts
            ("t2", False, T0 + 2 * DAY + HOUR, "b1"),  # explicit genuine: changes nothing
            ("t3", True, T0 + 3 * DAY + HOUR, "b9"),  # another bank's t3: not ours
        ]
    )
    return log, transactions(txs), frauds


def test_maturity_frauds_count_at_any_age_unlabelled_only_once_matured() -> None:
    log, txs, frauds = world()
    selection = select_rows(log, txs, frauds, maturity_days=3)
    assert selection.clock_ms == T0 + 10 * DAY
    # matured: ts < day 7 → t0..t6; young: t7, t8, t9; t8 is a fraud and counts
    kept = [int(t) for t in (selection.rows.ts_ms - T0) // DAY]
    assert kept == [0, 1, 2, 3, 4, 5, 6, 8]
    assert selection.rows.y.tolist() == [0, 1, 0, 0, 0, 0, 0, 1]
    assert selection.excluded == {"young_unlabelled": 2, "no_transaction_record": 1}
    # the scores travel with their rows
    np.testing.assert_allclose(selection.score, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8])
    np.testing.assert_allclose(selection.shadow_score, 1 - selection.score)
    assert selection.champion_versions == {"v1": 8} and selection.shadow_versions == {"v2": 8}


def test_exactly_at_maturity_is_still_young_and_as_of_and_since_move_the_cut() -> None:
    log, txs, frauds = world()
    at = select_rows(log, txs, frauds, maturity_days=3, clock_ms=T0 + 9 * DAY)
    assert 6 not in ((at.rows.ts_ms - T0) // DAY).tolist()  # t6 is exactly 3 days old
    later = select_rows(log, txs, frauds, maturity_days=3, clock_ms=T0 + 9 * DAY + 1)
    assert 6 in ((later.rows.ts_ms - T0) // DAY).tolist()
    since = select_rows(log, txs, frauds, maturity_days=3, since_ms=T0 + 4 * DAY)
    assert ((since.rows.ts_ms - T0) // DAY).tolist() == [4, 5, 6, 8]
    assert since.excluded["before_since"] == 4


def test_a_shadow_version_can_be_chosen() -> None:
    log, txs, frauds = world()
    log.add([record("t9", T0 + 9 * DAY, 0.9, 0.9, bank="b2", shadow_version="v3")], 0)
    txs = pa.concat_tables([txs, transactions([tx("t9", T0 + 9 * DAY, bank="b2")])])
    every = select_rows(log, txs, frauds, maturity_days=0)
    assert every.shadow_versions == {"v2": 10, "v3": 1}
    only = select_rows(log, txs, frauds, maturity_days=0, shadow_version="v3")
    assert len(only.rows) == 1 and only.excluded["other_shadow_version"] == 11


def test_a_bankless_label_matches_every_bank_and_a_resent_transaction_keeps_its_first_record() -> (
    None
):
    log = ShadowLog()
    log.add([record("t1", T0, 0.9, 0.8, bank="b1"), record("t1", T0, 0.7, 0.6, bank="b2")], 0)
    txs = transactions([tx("t1", T0, bank="b1", amount=10.0), tx("t1", T0, bank="b2"),
                        tx("t1", T0 + DAY, bank="b1", amount=99.0)])  # fmt: skip
    selection = select_rows(log, txs, labels([("t1", True, T0 + HOUR, None)]), maturity_days=30)
    assert selection.rows.y.tolist() == [1, 1]
    assert sorted(selection.rows.amount.tolist()) == [10.0, 50.0]


# ------------------------------------------------------------------------------ the metrics


def simulated_rows(n: int = 3000, seed: int = 4) -> tuple[ShadowLog, pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    ts = np.sort(T0 + rng.integers(0, 10 * DAY, n))
    y = rng.random(n) < 0.05
    champion = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    shadow = np.clip(0.5 * y + rng.random(n) * 0.5, 0, 1)
    log = ShadowLog()
    log.add([record(f"t{i}", int(ts[i]), float(champion[i]), float(shadow[i])) for i in range(n)])
    txs = transactions([tx(f"t{i}", int(ts[i]), card=f"c{rng.integers(0, 400)}",
                           amount=float(rng.lognormal(3, 1))) for i in range(n)])  # fmt: skip
    frauds = labels([(f"t{i}", True, int(ts[i]) + DAY, "b1") for i in np.flatnonzero(y)])
    return log, txs, frauds


def test_the_numbers_equal_training_evaluate_on_the_same_rows() -> None:
    log, txs, frauds = simulated_rows()
    policy = DecisionPolicy()
    selection = select_rows(log, txs, frauds, maturity_days=2)
    result = compare(selection, policy, k=20)
    assert 0 < selection.excluded["young_unlabelled"] < len(log)
    by_id = {t: i for i, t in enumerate(txs["transaction_id"].to_pylist())}
    for name, scores, card in (
        ("champion", selection.score, result.champion),
        ("shadow", selection.shadow_score, result.shadow),
    ):
        kept = [by_id[t] for t in _ids(selection, log)]
        table = txs.take(pa.array(kept))
        actions = policy.decide_many(table, scores).action_names()
        offline = offline_evaluate(
            table.select(["transaction_id", "card_id", "timestamp", "amount"])
            .append_column("score", pa.array(scores))
            .append_column("action", pa.array(actions.tolist(), pa.string())),
            frauds,
            k=20,
            policy=BankPolicy(),
        )
        assert card.transactions == offline.transactions == len(selection.rows), name
        assert card.frauds == offline.frauds
        assert card.average_precision == pytest.approx(offline.average_precision, abs=1e-12)
        assert card.auc_roc == pytest.approx(offline.auc_roc, abs=1e-12)
        assert card.card_precision_at_k == pytest.approx(offline.card_precision_at_k, abs=1e-12)
        assert card.cost_per_transaction == pytest.approx(offline.cost_per_transaction, abs=1e-9)
        assert card.decline_rate == pytest.approx(offline.action_share["decline"])
        assert card.review_rate == pytest.approx(offline.action_share["review"])
    assert result.shadow.average_precision > result.champion.average_precision  # built so


def _ids(selection: Any, log: ShadowLog) -> list[str]:
    """The transaction ids of the selected rows, in their order (via their unique times)."""
    by_time = {t: tid for tid, t in zip(log.transaction_id, log.timestamp_ms, strict=True)}
    return [by_time[int(t)] for t in selection.rows.ts_ms]


def test_the_report_json_and_table() -> None:
    log, txs, frauds = world()
    result = compare(select_rows(log, txs, frauds, maturity_days=3), DecisionPolicy(), k=2)
    data = orjson.loads(orjson.dumps(result.as_dict()))
    assert data["rows"] == 8 and data["frauds"] == 2 and data["k"] == 2
    assert data["clock"] == "2026-01-15T00:00:00+00:00" and data["maturity_days"] == 3
    assert data["champion"]["versions"] == {"v1": 8}
    assert data["champion"]["transactions"] == 8
    # built so: the shadow model ranks the two frauds (t1 0.9, t8 0.2) worse than the champion
    assert data["delta"]["average_precision"] == pytest.approx(
        result.shadow.average_precision - result.champion.average_precision
    )
    rows = {r[0]: r for r in result.table_rows()}
    assert set(rows) >= {"rows", "frauds", "AUC ROC", "average precision", "card precision@2",
                         "cost per transaction"}  # fmt: skip
    assert rows["rows"][1:3] == ("8", "8") and rows["rows"][3] == ""
    assert any("left out" in line for line in summary_lines(result))


def test_undefined_metrics_are_null_not_nan() -> None:
    log = ShadowLog()
    log.add([record("t1", T0, 0.1, 0.2)])
    selection = select_rows(log, transactions([tx("t1", T0)]), labels([]), maturity_days=0,
                            clock_ms=T0 + 1)  # fmt: skip
    data = compare(selection, DecisionPolicy()).as_dict()
    assert data["champion"]["average_precision"] is None
    assert math.isnan(compare(selection, DecisionPolicy()).champion.auc_roc)
    assert orjson.dumps(data)  # valid JSON
