"""Offline evaluation of scored logs: ranking quality and what the decisions would have cost.

* AUC ROC and average precision over transactions (scikit-learn).
* Card precision@k per day: each day, every card's highest score; cards an investigator already
  found (fraudulent and in an earlier day's top k) are left out, as the bank has blocked them; of
  the k highest cards, the share that really had fraud that day. Reported as the mean over days
  (the definition of the fraud-detection handbook, Le Borgne et al., chapter 4).
* Expected cost per transaction of the decisions taken, realised against the labels, next to two
  baselines: approve everything, and rules only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import average_precision_score, roc_auc_score

from scoring.decision import APPROVE, DECLINE, REVIEW, BankPolicy
from scoring.logs import TIMESTAMP

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Evaluation:
    transactions: int
    frauds: int
    auc_roc: float
    average_precision: float
    card_precision_at_k: float
    k: int
    days: int
    cost_per_transaction: float
    approve_all_cost_per_transaction: float
    rules_only_cost_per_transaction: float
    action_share: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


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


def realised_cost(
    action: np.ndarray, amount: np.ndarray, y: np.ndarray, policy: BankPolicy
) -> np.ndarray:
    """What each decision actually cost once the truth is known."""
    fraud = y.astype(bool)
    cost = np.zeros(len(action))
    cost[(action == APPROVE) & fraud] = amount[(action == APPROVE) & fraud]
    review = action == REVIEW
    cost[review] = policy.review_cost + policy.review_miss_rate * amount[review] * fraud[review]
    declined_genuine = (action == DECLINE) & ~fraud
    cost[declined_genuine] = policy.friction_share * amount[declined_genuine]
    return cost


def evaluate(
    scores: pa.Table, labels: pa.Table, *, k: int = 100, policy: BankPolicy | None = None
) -> Evaluation:
    """``scores`` holds transaction_id, score, action, card_id, timestamp, amount (and rule)."""
    policy = policy or BankPolicy()
    fraud_ids = labels.filter(pc.equal(labels["is_fraud"], True))["transaction_id"]
    y = np.asarray(
        pc.fill_null(pc.is_in(scores["transaction_id"], value_set=fraud_ids), False).to_numpy(
            zero_copy_only=False
        ),
        dtype=np.int8,
    )
    p = np.asarray(scores["score"].to_numpy(), dtype=np.float64)
    has_both = 0 < y.sum() < len(y)
    day = scores["timestamp"].cast(TIMESTAMP).cast(pa.int64()).to_numpy() // DAY_MS
    cards = scores["card_id"].combine_chunks().dictionary_encode().indices.to_numpy()
    precision = card_precision_at_k(cards, day, y, p, k)
    cp, days = precision.mean, len(precision.days)

    amount = np.asarray(scores["amount"].to_numpy(), dtype=np.float64)
    names = np.asarray(scores["action"].to_numpy(zero_copy_only=False), dtype=object)
    action = np.select([names == "review", names == "decline"], [REVIEW, DECLINE], APPROVE)
    rules_action = np.full(len(action), APPROVE)
    if "rule" in scores.column_names:
        ruled = np.asarray(pc.is_valid(scores["rule"]).to_numpy(zero_copy_only=False), dtype=bool)
        rules_action[ruled] = action[ruled]
    n = max(len(y), 1)
    return Evaluation(
        transactions=len(y),
        frauds=int(y.sum()),
        auc_roc=float(roc_auc_score(y, p)) if has_both else float("nan"),
        average_precision=float(average_precision_score(y, p)) if has_both else float("nan"),
        card_precision_at_k=cp,
        k=k,
        days=days,
        cost_per_transaction=float(realised_cost(action, amount, y, policy).sum() / n),
        approve_all_cost_per_transaction=float(amount[y.astype(bool)].sum() / n),
        rules_only_cost_per_transaction=float(
            realised_cost(rules_action, amount, y, policy).sum() / n
        ),
        action_share={
            name: float((names == name).mean()) if len(names) else 0.0
            for name in ("approve", "review", "decline")
        },
    )
