"""Point-in-time training sets: replay the whole log, keep the rows of a time window.

Features for every transaction come from replaying the log from its start through the shared
feature engine, with labels applied at their ``reported_at`` — so a row's features only know what
was known when it happened. Targets come from every label in the labels file: the file is what the
bank knows when it trains (DESIGN.md §7). A transaction without a fraud label is genuine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.features import EngineConfig, FeatureEngine, replay_log
from scoring.logs import TIMESTAMP


@dataclass(frozen=True)
class TrainingSet:
    X: np.ndarray  # features, float64 [n, NUM_FEATURES]
    y: np.ndarray  # int8 target: 1 = fraud
    timestamp_ms: np.ndarray  # int64, for time-ordered validation
    transactions: pa.Table  # the selected rows of the log (ids, cards, amounts ...)


def window_mask(
    transactions: pa.Table, start: datetime | None, until: datetime | None
) -> np.ndarray:
    """Rows with ``start <= timestamp < until`` (open ends when None)."""
    ts = transactions.column("timestamp").cast(TIMESTAMP)
    mask = pc.and_(
        pc.greater_equal(ts, pa.scalar(start, TIMESTAMP)) if start else pc.is_valid(ts),
        pc.less(ts, pa.scalar(until, TIMESTAMP)) if until else pc.is_valid(ts),
    )
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def fraud_targets(transactions: pa.Table, labels: pa.Table) -> np.ndarray:
    """1 where any label of the transaction says fraud (matching bank when the label names one)."""
    fraud = labels.filter(pc.equal(labels.column("is_fraud"), True))
    is_fraud = pc.is_in(transactions.column("transaction_id"), value_set=fraud["transaction_id"])
    y = np.asarray(pc.fill_null(is_fraud, False).to_numpy(zero_copy_only=False), dtype=np.int8)
    banked = fraud.filter(pc.is_valid(fraud["bank_id"]))
    if banked.num_rows and transactions.column("bank_id").null_count < transactions.num_rows:
        # A label that names a bank only marks that bank's transaction of that id.
        key = pc.binary_join_element_wise(
            pc.fill_null(transactions["bank_id"], ""), transactions["transaction_id"], "\x1f"
        )
        unbanked = fraud.filter(pc.is_null(fraud["bank_id"]))["transaction_id"]
        banked_keys = pc.binary_join_element_wise(
            banked["bank_id"], banked["transaction_id"], "\x1f"
        )
        hit = pc.or_(
            pc.is_in(key, value_set=banked_keys),
            pc.is_in(transactions["transaction_id"], value_set=unbanked),
        )
        y = np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=np.int8)
    return y


def build_training_set(
    transactions: pa.Table,
    labels: pa.Table,
    *,
    start: datetime | None = None,
    until: datetime | None = None,
    engine_config: EngineConfig | None = None,
) -> TrainingSet:
    features = replay_log(transactions, labels, engine=FeatureEngine(engine_config))
    mask = window_mask(transactions, start, until)
    rows = np.flatnonzero(mask)
    selected = transactions.take(pa.array(rows))
    ts = selected.column("timestamp").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    return TrainingSet(
        X=features[rows],
        y=fraud_targets(selected, labels),
        timestamp_ms=np.asarray(ts, dtype=np.int64),
        transactions=selected,
    )
