"""Decisions: rules first, then the action that minimises the bank's expected cost (DESIGN.md §5).

For a transaction of amount A whose fraud probability is p, each action has an expected cost:

* approve — the fraud goes through: ``p · A``
* review  — an analyst looks: ``review_cost + review_miss_rate · p · A`` (analysts miss some)
* decline — a genuine customer may be turned away: ``(1 − p) · friction_share · A``

The cheapest action wins (ties go to the milder action). Rules (allow/block lists, hard amount
limits) run before the model and say which rule decided. Everything is vectorised: one call decides
a whole micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from scoring.settings import Settings

APPROVE, REVIEW, DECLINE = 0, 1, 2
ACTIONS = np.array(["approve", "review", "decline"], dtype=object)


class BankPolicy(BaseModel):
    """One bank's costs and rules. Unknown banks get the default policy."""

    review_cost: float = Field(default=5.0, ge=0, description="Cost of one manual review.")
    review_miss_rate: float = Field(default=0.1, ge=0, le=1, description="Share of fraud missed.")
    friction_share: float = Field(
        default=0.02, ge=0, le=1, description="Cost of declining a genuine customer, share of A."
    )
    max_amount: float | None = Field(default=None, gt=0, description="Decline above this amount.")
    allow_cards: set[str] = Field(default_factory=set, description="Card tokens always approved.")
    block_cards: set[str] = Field(default_factory=set, description="Card tokens always declined.")
    block_merchants: set[str] = Field(default_factory=set)
    block_countries: set[str] = Field(default_factory=set)
    # The API's fallback (api/): what decides when the stream does not answer within the deadline.
    deadline_ms: float | None = Field(
        default=None, gt=0, description="The bank's API deadline; None: settings.api.deadline_ms."
    )
    fallback: Literal["approve_under_limit", "decline", "rules_only"] = Field(
        default="approve_under_limit",
        description="After the deadline, with the rules above still applied: approve up to "
        "fallback_max_amount and decline above it; decline everything; or approve what no rule "
        "declines.",
    )
    fallback_max_amount: float = Field(
        default=100.0, ge=0, description="Largest amount approve_under_limit approves."
    )


@dataclass(frozen=True)
class Decisions:
    """Vectorised decisions for a batch (one entry per transaction)."""

    action: np.ndarray  # int8: APPROVE | REVIEW | DECLINE
    rule: list[str | None]  # the rule that decided, or None when the model did
    expected_fraud_loss: np.ndarray
    review_cost: np.ndarray
    friction_cost: np.ndarray

    def action_names(self) -> np.ndarray:
        return ACTIONS[self.action]

    def take(self, rows: np.ndarray) -> Decisions:
        """The decisions of ``rows`` (positions in this batch), in that order."""
        return Decisions(
            action=self.action[rows],
            rule=[self.rule[i] for i in rows.tolist()],
            expected_fraud_loss=self.expected_fraud_loss[rows],
            review_cost=self.review_cost[rows],
            friction_cost=self.friction_cost[rows],
        )


class DecisionPolicy:
    """Per-bank policies with a default; decides batches."""

    def __init__(
        self, banks: dict[str, BankPolicy] | None = None, default: BankPolicy | None = None
    ):
        self.banks = banks or {}
        self.default = default or BankPolicy()

    def for_bank(self, bank_id: str | None) -> BankPolicy:
        return self.banks.get(bank_id or "", self.default)

    def decide_many(self, transactions: pa.Table, scores: np.ndarray) -> Decisions:
        n = transactions.num_rows
        amount = np.asarray(transactions.column("amount").to_numpy(), dtype=np.float64)
        p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        banks = _strings(transactions, "bank_id")
        review_cost, miss, friction = self._bank_parameters(banks)

        cost = np.stack(
            [p * amount, review_cost + miss * p * amount, (1.0 - p) * friction * amount], axis=1
        )
        action = np.argmin(cost, axis=1).astype(np.int8)  # first minimum: the milder action
        rule: list[str | None] = [None] * n
        self._apply_rules(transactions, banks, action, rule)

        fraud_loss = np.where(action == APPROVE, p * amount, 0.0)
        fraud_loss = np.where(action == REVIEW, miss * p * amount, fraud_loss)
        return Decisions(
            action=action,
            rule=rule,
            expected_fraud_loss=fraud_loss,
            review_cost=np.where(action == REVIEW, review_cost, 0.0),
            friction_cost=np.where(action == DECLINE, (1.0 - p) * friction * amount, 0.0),
        )

    def _bank_parameters(
        self, banks: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's review cost, review miss rate and friction share, from its bank."""
        distinct = sorted(set(banks), key=lambda b: b or "")
        policies = [self.for_bank(bank) for bank in distinct]
        position = {bank: i for i, bank in enumerate(distinct)}
        rows = np.fromiter((position[b] for b in banks), dtype=np.int64, count=len(banks))
        review = np.array([p.review_cost for p in policies])[rows]
        miss = np.array([p.review_miss_rate for p in policies])[rows]
        friction = np.array([p.friction_share for p in policies])[rows]
        return review, miss, friction

    def _apply_rules(
        self, transactions: pa.Table, banks: list[str | None], action: np.ndarray, rule: list
    ) -> None:
        """Rules override the model. Order: allow list, then block lists, then hard limits —
        a blocked or over-limit transaction is declined even for an allow-listed card."""
        amount = transactions.column("amount").to_numpy()
        cards = _strings(transactions, "card_id")
        merchants = _strings(transactions, "merchant_id")
        countries = _strings(transactions, "country")
        policies = {bank: self.for_bank(bank) for bank in set(banks)}
        if not any(_has_rules(policy) for policy in policies.values()):
            return
        for i, bank in enumerate(banks):
            policy = policies[bank]
            if not _has_rules(policy):
                continue
            if cards[i] in policy.allow_cards:
                action[i], rule[i] = APPROVE, "allow_list:card"
            if cards[i] in policy.block_cards:
                action[i], rule[i] = DECLINE, "block_list:card"
            elif merchants[i] is not None and merchants[i] in policy.block_merchants:
                action[i], rule[i] = DECLINE, "block_list:merchant"
            elif countries[i] is not None and countries[i] in policy.block_countries:
                action[i], rule[i] = DECLINE, "block_list:country"
            elif policy.max_amount is not None and amount[i] > policy.max_amount:
                action[i], rule[i] = DECLINE, "hard_limit:amount"


def policy_from(settings: Settings) -> DecisionPolicy:
    """The policy the settings describe: defaults from the scoring section, per-bank overrides
    from ``FRAUD_SCORING__BANKS`` (JSON: {bank_id: {review_cost: ..., block_cards: [...]}})."""
    scoring = settings.scoring
    default = BankPolicy(
        review_cost=scoring.review_cost,
        review_miss_rate=scoring.review_miss_rate,
        friction_share=scoring.friction_share,
    )
    banks = {
        bank: default.model_copy(update=BankPolicy.model_validate(fields).model_dump(
            exclude_unset=True))
        for bank, fields in scoring.banks.items()
    }  # fmt: skip
    return DecisionPolicy(banks=banks, default=default)


def _has_rules(policy: BankPolicy) -> bool:
    return bool(
        policy.allow_cards
        or policy.block_cards
        or policy.block_merchants
        or policy.block_countries
        or policy.max_amount is not None
    )


def _strings(table: pa.Table, name: str) -> list[str | None]:
    if name not in table.column_names:
        return [None] * table.num_rows
    return pc.cast(table.column(name), pa.string()).to_pylist()
