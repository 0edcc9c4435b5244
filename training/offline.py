"""Offline replay of a log through the feature engine, the compiled model and the decision policy.

This is ``fraudstream score-log``: the same engine, model and policy as the live stream, so its
scores are the oracle the stream is tested against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import numpy as np
import pyarrow as pa

from scoring.decision import DecisionPolicy
from scoring.features import EngineConfig, FeatureEngine, replay_log
from training.dataset import window_mask


class Scorer(Protocol):
    def score_many(self, X: np.ndarray) -> np.ndarray: ...


def score_table(
    transactions: pa.Table,
    features: np.ndarray,
    scorer: Scorer,
    policy: DecisionPolicy,
    model_version: str,
) -> pa.Table:
    scores = scorer.score_many(np.ascontiguousarray(features))
    decisions = policy.decide_many(transactions, scores)
    return pa.table(
        {
            "transaction_id": transactions["transaction_id"],
            "score": pa.array(scores, pa.float64()),
            "action": pa.array(decisions.action_names().tolist(), pa.string()),
            "model_version": pa.array([model_version] * transactions.num_rows, pa.string()),
            "rule": pa.array(decisions.rule, pa.string()),
            "expected_fraud_loss": decisions.expected_fraud_loss,
            "review_cost": decisions.review_cost,
            "friction_cost": decisions.friction_cost,
            # context that evaluation needs (card precision@k per day, realised cost)
            "bank_id": transactions["bank_id"],
            "card_id": transactions["card_id"],
            "timestamp": transactions["timestamp"],
            "amount": transactions["amount"],
        }
    )


def score_log(
    transactions: pa.Table,
    labels: pa.Table | None,
    scorer: Scorer,
    *,
    model_version: str,
    policy: DecisionPolicy | None = None,
    start: datetime | None = None,
    until: datetime | None = None,
    engine_config: EngineConfig | None = None,
) -> pa.Table:
    """Scores and actions for the transactions in [start, until); state built from the start."""
    features = replay_log(transactions, labels, engine=FeatureEngine(engine_config))
    rows = np.flatnonzero(window_mask(transactions, start, until))
    selected = transactions.take(pa.array(rows))
    return score_table(selected, features[rows], scorer, policy or DecisionPolicy(), model_version)
