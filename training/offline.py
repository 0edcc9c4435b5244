"""Offline replay of a log through the feature engine, the compiled model and the decision policy.

This is ``fraudstream score-log``: the same engine, model, policy and :class:`BatchScorer` as the
live stream, so its scores are the oracle the stream is tested against.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import orjson
import pyarrow as pa

from scoring.decision import DecisionPolicy
from scoring.features import EngineConfig, FeatureEngine, replay_log
from scoring.pipeline import BatchScorer, Model
from scoring.reasons import ReasonsMethod
from training.dataset import window_mask


def scored_table(transactions: pa.Table, features: np.ndarray, scorer: BatchScorer) -> pa.Table:
    batch = scorer.decide(transactions, features)
    d = batch.decisions
    n = transactions.num_rows
    return pa.table(
        {
            "transaction_id": transactions["transaction_id"],
            "score": pa.array(batch.scores, pa.float64()),
            "action": pa.array(d.action_names().tolist(), pa.string()),
            "model_version": pa.array([batch.model_version] * n, pa.string()),
            "rule": pa.array(d.rule, pa.string()),
            "expected_fraud_loss": d.expected_fraud_loss,
            "review_cost": d.review_cost,
            "friction_cost": d.friction_cost,
            "compute_usd": pa.array([batch.compute_usd_per_transaction] * n, pa.float64()),
            "reasons": pa.array(
                [orjson.dumps(r).decode() if r else None for r in batch.reasons], pa.string()
            ),
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
    model: Model,
    *,
    policy: DecisionPolicy | None = None,
    start: datetime | None = None,
    until: datetime | None = None,
    engine_config: EngineConfig | None = None,
    cpu_second_usd: float = 0.0,
    reasons_method: ReasonsMethod = "shap",
) -> pa.Table:
    """Scores and actions for the transactions in [start, until); state built from the start."""
    features = replay_log(transactions, labels, engine=FeatureEngine(engine_config))
    rows = np.flatnonzero(window_mask(transactions, start, until))
    scorer = BatchScorer(
        model, policy, cpu_second_usd=cpu_second_usd, reasons_method=reasons_method
    )
    return scored_table(transactions.take(pa.array(rows)), features[rows], scorer)
