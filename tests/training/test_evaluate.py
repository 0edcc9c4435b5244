"""Offline evaluation metrics on hand-made inputs."""

import numpy as np
import pyarrow as pa
import pytest

from scoring.decision import APPROVE, DECLINE, REVIEW, BankPolicy
from scoring.logs import TIMESTAMP
from training.evaluate import card_precision_at_k, evaluate, realised_cost

DAY = 86_400_000


def test_card_precision_uses_each_cards_best_score_and_drops_known_cards() -> None:
    cards = np.array([0, 0, 1, 2, 0, 1, 2])  # a, b, c
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.95, 0.7, 0.6])
    y = np.array([0, 1, 0, 0, 1, 0, 1])
    # day 0: top-2 cards a (0.9, fraud) and b (0.8, genuine) -> 1/2
    # day 1: a was found on day 0 and is dropped; top-2 = b (genuine), c (fraud) -> 1/2
    precision = card_precision_at_k(cards, day, y, scores, k=2)
    assert precision.days == (0, 1)
    assert precision.per_day == (0.5, 0.5)
    assert card_precision_at_k(cards, day, y, scores, k=1).mean == pytest.approx((1 + 0) / 2)


def test_only_cards_found_in_the_top_k_are_dropped_later() -> None:
    cards = np.array([0, 1, 0, 1])
    day = np.array([0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.9, 0.8])
    y = np.array([1, 1, 1, 1])
    # day 0: card 0 found (top-1); card 1 was fraudulent too but not found, so it stays in play
    assert card_precision_at_k(cards, day, y, scores, k=1).per_day == (1.0, 1.0)


def test_realised_cost_counts_what_each_action_really_cost() -> None:
    policy = BankPolicy(review_cost=5, review_miss_rate=0.1, friction_share=0.02)
    action = np.array([APPROVE, APPROVE, REVIEW, REVIEW, DECLINE, DECLINE])
    amount = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    y = np.array([1, 0, 1, 0, 1, 0])
    cost = realised_cost(action, amount, y, policy)
    assert cost.tolist() == [100.0, 0.0, 15.0, 5.0, 0.0, 2.0]


def test_evaluate_reports_ranking_cost_and_baselines() -> None:
    scores = pa.table(
        {
            "transaction_id": ["t1", "t2", "t3", "t4"],
            "score": [0.9, 0.1, 0.8, 0.2],
            "action": ["decline", "approve", "approve", "approve"],
            "rule": [None, None, None, None],
            "card_id": ["a", "b", "c", "d"],
            "timestamp": pa.array([0, 1, DAY, DAY + 1], pa.int64()).cast(TIMESTAMP),
            "amount": [50.0, 20.0, 30.0, 10.0],
        }
    )
    labels = pa.table({"transaction_id": ["t1", "t3"], "is_fraud": [True, True]})
    result = evaluate(scores, labels, k=1)
    assert result.auc_roc == 1.0 and result.average_precision == 1.0
    assert result.card_precision_at_k == 1.0 and result.days == 2
    assert result.approve_all_cost_per_transaction == pytest.approx((50 + 30) / 4)
    assert result.cost_per_transaction == pytest.approx(30 / 4)  # t3 approved: its amount lost
    assert result.rules_only_cost_per_transaction == result.approve_all_cost_per_transaction
    assert result.action_share == {"approve": 0.75, "review": 0.0, "decline": 0.25}
