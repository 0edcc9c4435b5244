"""What every fraud typology shares: its context, and helpers to place incidents in time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.simulator.batch import TxBatch
from training.simulator.config import SimulationConfig
from training.simulator.population import (
    DAY_MS,
    Population,
    merchant_channel,
    merchant_terminal,
)


@dataclass(frozen=True)
class FraudContext:
    config: SimulationConfig
    population: Population
    genuine: TxBatch  # all genuine traffic, sorted by time (compromised terminals need it)
    code: int  # this typology's fraud_type code
    lead_days: int = 0  # per_day arrays start this many days before the simulated period

    @property
    def end_ms(self) -> int:
        return self.config.start_ms + self.config.days * DAY_MS


@dataclass(frozen=True)
class Typology:
    name: str
    # Expected fraudulent transactions per incident: turns the fraud budget (transactions) into
    # incident counts. Measured values are in docs/simulator.md.
    mean_transactions: float
    generate: Callable[[FraudContext, np.ndarray, np.random.Generator], TxBatch]
    # (analyst, customer, chargeback) shares of who reports this typology's frauds.
    sources: tuple[float, float, float]
    # Incidents whose frauds stretch over weeks also start this many days before the period, at
    # the day-0 rate, so the period opens in steady state instead of ramping up from nothing.
    lead_days: int = 0


def incident_days(ctx: FraudContext, per_day: np.ndarray) -> np.ndarray:
    """Day index (0 = first simulated day; negative in the lead) of each incident."""
    return np.repeat(np.arange(per_day.size) - ctx.lead_days, per_day)


def day_start_ms(ctx: FraudContext, day: np.ndarray) -> np.ndarray:
    return ctx.config.start_ms + np.asarray(day, dtype=np.int64) * DAY_MS


def victims_by_activity(ctx: FraudContext, n: int, rng: np.random.Generator) -> np.ndarray:
    """Cards chosen in proportion to their activity: cards with a history worth taking over."""
    rate = ctx.population.cards.rate
    cum = np.cumsum(rate)
    pick = np.searchsorted(cum, rng.random(n) * cum[-1], side="right")
    return np.minimum(pick, rate.size - 1)


def victims_uniform(ctx: FraudContext, n: int, rng: np.random.Generator) -> np.ndarray:
    """Cards chosen uniformly: stolen card data does not care how much the card is used."""
    return rng.integers(0, len(ctx.population.cards), n)


def repeat_per_incident(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(incident index, position within the incident) for each transaction of each incident."""
    incident = np.repeat(np.arange(counts.size), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(incident.size) - starts[incident]
    return incident, position


def typical_amount(ctx: FraudContext, card: np.ndarray) -> np.ndarray:
    """The card's median amount (EUR) before category scaling."""
    return np.exp(ctx.population.cards.log_amount[card])


def fraud_batch(
    ctx: FraudContext,
    rng: np.random.Generator,
    *,
    card: np.ndarray,
    ts: np.ndarray,
    amount_eur: np.ndarray,
    merchant: np.ndarray,
    incident: np.ndarray,
    terminal: np.ndarray | None = None,
) -> TxBatch:
    """Assemble a typology's transactions; those that fall after the simulated period are cut."""
    merchants = ctx.population.merchants
    batch = TxBatch(
        card=np.asarray(card, dtype=np.int64),
        ts=np.asarray(ts, dtype=np.int64),
        amount_eur=np.asarray(amount_eur, dtype=np.float64),
        merchant=np.asarray(merchant, dtype=np.int64),
        terminal=(
            merchant_terminal(rng, merchants, merchant)
            if terminal is None
            else np.asarray(terminal, dtype=np.int64)
        ),
        channel=merchant_channel(rng, merchants, merchant),
        fraud_type=np.full(len(card), ctx.code, dtype=np.int8),
        incident=np.asarray(incident, dtype=np.int64),
    )
    inside = (batch.ts >= ctx.config.start_ms) & (batch.ts < ctx.end_ms)
    return batch.take(np.flatnonzero(inside))
