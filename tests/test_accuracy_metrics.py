"""The handbook metrics (benchmarks/accuracy/metrics.py) and protocol pieces, on hand-made inputs.

Every expected value here was worked out by hand from the handbook's definitions, so these tests
pin the definitions, not just the code.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import baseline, handbook_simulator, metrics  # noqa: E402
from scoring.logs import TIMESTAMP, read_labels, read_transactions  # noqa: E402

# ------------------------------------------------------------------------ AUC ROC and avg precision


def test_auc_roc_counts_correctly_ordered_pairs() -> None:
    # (fraud, genuine) pairs: (.35, .1) ok, (.35, .4) wrong, (.8, .1) ok, (.8, .4) ok -> 3/4.
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.auc_roc(y, s) == pytest.approx(0.75)


def test_average_precision_is_mean_precision_at_each_fraud() -> None:
    # Ranked: 0.8 fraud (P=1/1), 0.4 genuine, 0.35 fraud (P=2/3): AP = (1 + 2/3) / 2.
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)


def test_threshold_free_metrics_are_nan_without_both_classes() -> None:
    assert math.isnan(metrics.auc_roc(np.array([0, 0]), np.array([0.1, 0.2])))
    assert math.isnan(metrics.average_precision(np.array([0, 0]), np.array([0.1, 0.2])))
    assert math.isnan(metrics.auc_roc(np.array([1, 1]), np.array([0.1, 0.2])))


# ---------------------------------------------------------------------------- card precision@k


def _cp(rows: list[tuple[int, int, int, float]], k: int, **kwargs: bool) -> metrics.CardPrecision:
    """rows: (card, day, is_fraud, score)."""
    card, day, y, s = (np.array(col) for col in zip(*rows, strict=True))
    return metrics.card_precision_at_k(card, day, y, s, k, **kwargs)


def test_a_card_is_ranked_by_its_highest_score_of_the_day() -> None:
    # Card 1's fraud scores low, but its genuine transaction puts the card on top: still a hit.
    rows = [(1, 0, 0, 0.9), (1, 0, 1, 0.1), (2, 0, 0, 0.5), (3, 0, 1, 0.4)]
    result = _cp(rows, k=1)
    assert result.per_day == (1.0,)
    assert result.compromised_cards_per_day == (2,)
    assert _cp(rows, k=2).per_day == (0.5,)  # cards 1 and 2; card 3 (fraud) is third


def test_precision_divides_by_k_even_when_fewer_cards_transacted() -> None:
    rows = [(1, 0, 1, 0.9), (2, 0, 0, 0.8)]
    assert _cp(rows, k=5).per_day == (pytest.approx(1 / 5),)


def test_cards_detected_on_an_earlier_day_are_removed_from_later_days() -> None:
    rows = [
        (1, 0, 1, 0.9),  # day 0: card 1 is top and fraud: detected
        (2, 0, 0, 0.1),
        (1, 1, 1, 0.9),  # day 1: card 1 again, but it is blocked already
        (2, 1, 0, 0.8),  # -> card 2 (genuine) becomes the top card
        (3, 1, 1, 0.1),
    ]
    with_removal = _cp(rows, k=1)
    assert with_removal.per_day == (1.0, 0.0)
    assert with_removal.mean == pytest.approx(0.5)
    assert with_removal.compromised_cards_per_day == (1, 1)  # card 1 no longer counted on day 1
    without = _cp(rows, k=1, remove_detected=False)
    assert without.per_day == (1.0, 1.0)


def test_a_fraud_card_outside_the_top_k_is_not_removed() -> None:
    rows = [
        (1, 0, 0, 0.9),
        (2, 0, 1, 0.1),  # fraud, but not in the top 1 on day 0: not detected
        (2, 1, 1, 0.9),  # so on day 1 it is still there, and found
        (1, 1, 0, 0.5),
    ]
    assert _cp(rows, k=1).per_day == (0.0, 1.0)


def test_days_are_visited_in_order_whatever_the_row_order() -> None:
    rows = [(1, 5, 1, 0.9), (1, 3, 1, 0.9), (2, 5, 1, 0.5), (2, 3, 0, 0.1)]
    result = _cp(rows, k=1)
    assert result.days == (3, 5)
    assert result.per_day == (1.0, 1.0)  # day 3 finds card 1; day 5 then finds card 2


def test_ties_are_broken_by_card_code() -> None:
    rows = [(7, 0, 0, 0.5), (3, 0, 1, 0.5)]
    assert _cp(rows, k=1).per_day == (1.0,)  # card 3 before card 7


def test_card_precision_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be"):
        metrics.card_precision_at_k(np.array([1]), np.array([0]), np.array([1]), np.array([1.0]), 0)
    with pytest.raises(ValueError, match="same length"):
        metrics.card_precision_at_k(np.array([1, 2]), np.array([0]), np.array([1]), np.array([1.0]))


def test_evaluate_bundles_the_three_metrics() -> None:
    card = np.array([1, 2, 3, 4])
    day = np.array([0, 0, 1, 1])
    y = np.array([0, 1, 1, 0])
    s = np.array([0.2, 0.9, 0.3, 0.6])
    scores = metrics.evaluate(card, day, y, s, k=1)
    assert scores.auc_roc == pytest.approx(0.75)  # only (0.3 fraud, 0.6 genuine) is misordered
    assert scores.card_precision_per_day == (1.0, 0.0)
    assert scores.card_precision_at_k == pytest.approx(0.5)
    assert scores.as_dict()["card_precision_at_1"] == pytest.approx(0.5)


# ------------------------------------------------------------------ baseline windows and protocol

DAY = baseline.MS_PER_DAY


def _log(rows: list[tuple[str, str, float, float, bool]]) -> baseline.Log:
    """rows: (card, terminal, day as a float, amount, is_fraud); origin 2018-04-01 (a Sunday)."""
    origin = 1_522_540_800_000
    n = len(rows)
    transactions = pa.table(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "card_id": [r[0] for r in rows],
            "terminal_id": [r[1] for r in rows],
            "timestamp": pa.array([origin + int(r[2] * DAY) for r in rows]).cast(TIMESTAMP),
            "amount": [r[3] for r in rows],
        }
    )
    labels = pa.table(
        {"transaction_id": [f"t{i}" for i in range(n)], "is_fraud": [r[4] for r in rows]}
    )
    return baseline.load_log(transactions, labels)


def test_card_windows_include_the_current_transaction() -> None:
    log = _log([("c", "t", 0.25, 10.0, False), ("c", "t", 1.75, 30.0, False)])
    X = baseline.handbook_features(log)
    col = {name: i for i, name in enumerate(baseline.FEATURES)}
    # Second transaction: the 1-day window (0.75, 1.75] holds only itself; 7 days holds both.
    assert X[1, col["card_nb_tx_1d"]] == 1 and X[1, col["card_avg_amount_1d"]] == 30.0
    assert X[1, col["card_nb_tx_7d"]] == 2 and X[1, col["card_avg_amount_7d"]] == 20.0
    assert X[0, col["is_weekend"]] == 1.0  # 2018-04-01 was a Sunday
    assert X[1, col["is_weekend"]] == 0.0  # Monday
    assert X[0, col["is_night"]] == 1.0  # 06:00 is still night (hour <= 6)
    assert X[1, col["is_night"]] == 0.0  # 18:00


def test_terminal_risk_looks_only_at_the_window_before_the_label_delay() -> None:
    log = _log(
        [
            ("a", "T", 0.75, 1.0, True),  # 7.75 days before the last row: in (t-8, t-7]
            ("b", "T", 1.5, 1.0, False),  # exactly 7 days before: the window's closed end
            ("c", "T", 5.0, 1.0, True),  # 3.5 days before: inside the delay, invisible
            ("d", "T", 8.5, 1.0, False),
        ]
    )
    X = baseline.handbook_features(log)
    col = {name: i for i, name in enumerate(baseline.FEATURES)}
    assert X[3, col["terminal_nb_tx_1d"]] == 2
    assert X[3, col["terminal_risk_1d"]] == pytest.approx(0.5)
    assert X[0, col["terminal_nb_tx_1d"]] == 0 and X[0, col["terminal_risk_1d"]] == 0.0


def test_test_set_drops_cards_whose_fraud_was_known_before_the_test_day() -> None:
    fold = baseline.Fold(train_start_day=1, train_days=1, delay_days=2, test_days=2)  # test 4, 5
    log = _log(
        [
            ("early", "T", 0.5, 1.0, True),  # fraud before the training day: not "known"
            ("train", "T", 1.5, 1.0, True),  # fraud while training: known from test day 4
            ("gap", "T", 2.5, 1.0, True),  # fraud on day 2: known from day 2 + 2 + 1 = 5
            ("early", "T", 4.5, 1.0, False),
            ("train", "T", 4.5, 1.0, False),
            ("gap", "T", 4.5, 1.0, False),
            ("gap", "T", 5.5, 1.0, False),
            ("train", "T", 2.5, 1.0, False),  # in the gap: never a test row
        ]
    )
    assert baseline.train_rows(log, fold).tolist() == [1]
    assert baseline.test_rows(log, fold).tolist() == [3, 5]


# ------------------------------------------------------------------------------- the simulator

SMALL = handbook_simulator.SimulatorConfig(n_customers=300, n_terminals=600, n_days=40, seed=5)


def test_simulator_is_deterministic_for_a_seed() -> None:
    a, b = handbook_simulator.generate(SMALL), handbook_simulator.generate(SMALL)
    assert np.array_equal(a.amount, b.amount) and np.array_equal(a.scenario, b.scenario)
    other = handbook_simulator.generate(
        handbook_simulator.SimulatorConfig(n_customers=300, n_terminals=600, n_days=40, seed=6)
    )
    assert len(other) != len(a) or not np.array_equal(other.amount, a.amount)


def test_simulator_follows_the_handbook_rules() -> None:
    data = handbook_simulator.generate(SMALL)
    second_of_day = data.seconds % 86_400
    assert ((second_of_day > 0) & (second_of_day < 86_400)).all()
    assert np.all(np.diff(data.seconds) >= 0)  # time order
    assert (data.amount > 0).all()
    assert (data.amount[data.scenario == 0] <= 220).all()  # scenario 1: every amount > 220
    assert (data.amount[data.scenario == 1] > 220).all()
    assert set(np.unique(data.scenario)) == {0, 1, 2, 3}
    # Scenario 2: a terminal is compromised for 28 days, so its frauds cluster in time.
    compromised = data.terminal[data.scenario == 2]
    assert np.unique(compromised).size < compromised.size


def test_simulator_writes_our_log_format(tmp_path: Path) -> None:
    data = handbook_simulator.generate(SMALL)
    paths = data.write(tmp_path)
    transactions = read_transactions(paths["transactions"])  # validates ids, amounts, no PANs
    labels = read_labels(paths["labels"])
    assert transactions.num_rows == labels.num_rows == len(data)
    assert pc.all(pc.match_substring_regex(transactions["card_id"], r"^C\d{6}$"))
    assert set(transactions["currency"].to_pylist()) == {"EUR"}
    delay = pc.subtract(
        labels["reported_at"].cast(pa.int64()), transactions["timestamp"].cast(pa.int64())
    )
    assert set(delay.to_pylist()) == {7 * DAY}
    assert labels["is_fraud"].to_pylist() == data.is_fraud.tolist()
