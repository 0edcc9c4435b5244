"""The handbook's three accuracy metrics: AUC ROC, average precision, card precision@k.

Definitions follow *Reproducible Machine Learning for Credit Card Fraud Detection – Practical
Handbook* (Le Borgne et al.), chapter 4:

* AUC ROC and average precision are computed once over all test transactions, pooled across the
  test days (scikit-learn's implementations, as the handbook uses).
* Card precision@k is a per-day, per-card measure: investigators look at the k most suspicious
  *cards* of each day, a card's suspicion being its highest transaction score that day. Precision is
  the share of those k cards that had at least one fraud that day, divided by k even when fewer
  than k cards transacted. A card found fraudulent among the top k of one test day is blocked, so it
  is removed from every later test day. The reported value is the mean over the test days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

# One definition of card precision@k for the project: the evaluator's (training/evaluate.py).
from training.evaluate import CardPrecision, card_precision_at_k

__all__ = ["CardPrecision", "card_precision_at_k"]


def auc_roc(is_fraud: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve over all transactions (NaN when only one class is present)."""
    y = np.asarray(is_fraud, dtype=bool)
    if y.all() or not y.any():
        return float("nan")  # undefined; sklearn would raise
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def average_precision(is_fraud: np.ndarray, score: np.ndarray) -> float:
    """Average precision (step-wise area under the precision-recall curve), all transactions."""
    y = np.asarray(is_fraud, dtype=bool)
    if not y.any():
        return float("nan")  # no positive: precision at any recall is undefined
    return float(average_precision_score(y, np.asarray(score, dtype=np.float64)))


@dataclass(frozen=True)
class Scores:
    """The three handbook metrics for one test period."""

    auc_roc: float
    average_precision: float
    card_precision_at_k: float
    k: int
    card_precision_per_day: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "auc_roc": self.auc_roc,
            "average_precision": self.average_precision,
            f"card_precision_at_{self.k}": self.card_precision_at_k,
            f"card_precision_at_{self.k}_per_day": list(self.card_precision_per_day),
        }


def evaluate(
    card: np.ndarray, day: np.ndarray, is_fraud: np.ndarray, score: np.ndarray, k: int = 100
) -> Scores:
    """AUC ROC, average precision and card precision@k of one test period's scores."""
    cp = card_precision_at_k(card, day, is_fraud, score, k)
    return Scores(
        auc_roc=auc_roc(is_fraud, score),
        average_precision=average_precision(is_fraud, score),
        card_precision_at_k=cp.mean,
        k=k,
        card_precision_per_day=cp.per_day,
    )
