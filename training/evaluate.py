"""Offline evaluation of scored logs: ranking quality and what the decisions would have cost.

* AUC ROC and average precision over transactions (scikit-learn).
* Card precision@k per day: each day, every card's highest score; cards already known to be
  compromised on an earlier day are left out (the bank has blocked them); of the k highest cards,
  the share that really had fraud that day. Reported as the mean over days (the fraud-detection
  handbook's definition).
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


def card_precision_at_k(
    card_ids: np.ndarray, day: np.ndarray, scores: np.ndarray, y: np.ndarray, k: int
) -> tuple[float, int]:
    """Mean over days of the share of true-fraud cards among the day's k riskiest cards."""
    known_compromised: set[object] = set()
    precisions = []
    for d in np.unique(day):
        rows = day == d
        cards, inverse = np.unique(card_ids[rows], return_inverse=True)
        best = np.full(cards.size, -np.inf)
        np.maximum.at(best, inverse, scores[rows])
        fraud = np.zeros(cards.size, dtype=bool)
        np.logical_or.at(fraud, inverse, y[rows].astype(bool))
        fresh = np.array([c not in known_compromised for c in cards], dtype=bool)
        candidates = np.flatnonzero(fresh)
        top = candidates[np.argsort(-best[candidates], kind="stable")[:k]]
        precisions.append(fraud[top].sum() / k)
        known_compromised.update(cards[fraud].tolist())
    return (float(np.mean(precisions)) if precisions else float("nan")), len(precisions)


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
    cards = np.asarray(scores["card_id"].to_numpy(zero_copy_only=False), dtype=object)
    cp, days = card_precision_at_k(cards, day, p, y, k)

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
