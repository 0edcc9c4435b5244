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
class CardPrecision:
    """Card precision@k: the mean over days, and the per-day values it averages."""

    k: int
    mean: float
    per_day: tuple[float, ...]
    days: tuple[int, ...]
    compromised_cards_per_day: tuple[int, ...]  # fraud cards still in play that day (not yet found)


def card_precision_at_k(
    card: np.ndarray,
    day: np.ndarray,
    is_fraud: np.ndarray,
    score: np.ndarray,
    k: int = 100,
    *,
    remove_detected: bool = True,
) -> CardPrecision:
    """Card precision@k per day, averaged over the days present in ``day``.

    ``card`` and ``day`` are per-transaction integer codes (any stable encoding). Days are visited
    in increasing order, which matters because detected cards are removed from later days.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    card = np.asarray(card, dtype=np.int64)
    day = np.asarray(day, dtype=np.int64)
    y = np.asarray(is_fraud, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    if not (len(card) == len(day) == len(y) == len(s)):
        raise ValueError("card, day, is_fraud and score must have the same length")

    detected: set[int] = set()
    days = np.unique(day)
    per_day: list[float] = []
    compromised: list[int] = []
    for d in days:
        in_day = day == d
        cards, max_score, any_fraud = _per_card_max(card[in_day], s[in_day], y[in_day])
        keep = ~np.isin(cards, np.fromiter(detected, dtype=np.int64, count=len(detected)))
        cards, max_score, any_fraud = cards[keep], max_score[keep], any_fraud[keep]
        compromised.append(int(any_fraud.sum()))
        top = _top_k(cards, max_score, k)
        hits = cards[top][any_fraud[top]]
        per_day.append(len(hits) / k)
        if remove_detected:
            detected.update(int(c) for c in hits)
    mean = float(np.mean(per_day)) if per_day else float("nan")
    return CardPrecision(
        k=k,
        mean=mean,
        per_day=tuple(per_day),
        days=tuple(int(d) for d in days),
        compromised_cards_per_day=tuple(compromised),
    )


def _per_card_max(
    card: np.ndarray, score: np.ndarray, is_fraud: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each card's highest score and whether any of its transactions was fraud (one day's data)."""
    cards, inverse = np.unique(card, return_inverse=True)
    max_score = np.full(len(cards), -np.inf)
    np.maximum.at(max_score, inverse, score)
    any_fraud = np.zeros(len(cards), dtype=bool)
    np.logical_or.at(any_fraud, inverse, is_fraud)
    return cards, max_score, any_fraud


def _top_k(cards: np.ndarray, max_score: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k highest-scoring cards; ties broken by card code so results are stable."""
    order = np.lexsort((cards, -max_score))
    return order[:k]


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
