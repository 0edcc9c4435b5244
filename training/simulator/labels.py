"""Labels: who reports what, and when.

Frauds: every fraudulent transaction gets ``is_fraud=true``. Reports come per incident (one card,
one attack): the incident's source (analyst / customer / chargeback, shares per typology) sets a
delay after the incident's first transaction; each transaction is reported at that time, or
REPORT_GAP after itself if it happened later. Delays are lognormal per source and capped.

Genuine: a share of genuine transactions get an explicit ``is_fraud=false`` (analysts clearing an
alert, customers confirming "it was me"); alerts favour unusual transactions (abroad, large), so the
explicit genuine labels are not a random sample. The rest are genuine by maturity; ``label_all``
writes them out at timestamp + maturity with no source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.simulator.batch import GENUINE, TxBatch
from training.simulator.config import SimulationConfig
from training.simulator.population import DAY_MS, Population
from training.simulator.rhythms import HOUR_MS
from training.simulator.typologies import ALL

SOURCES = ("analyst", "customer", "chargeback")
ANALYST, CUSTOMER, CHARGEBACK = 0, 1, 2
# Median delay (days) and log-sd per source: analysts act on alerts within days, customers notice
# on their statement or app within a week or two, chargebacks take weeks to come back.
FRAUD_DELAY = {ANALYST: (2.0, 0.8), CUSTOMER: (8.0, 0.6), CHARGEBACK: (20.0, 0.45)}
GENUINE_DELAY = {ANALYST: (2.0, 0.8), CUSTOMER: (3.0 / 24, 1.0)}
GENUINE_CUSTOMER_SHARE = 0.25
MIN_DELAY_MS = HOUR_MS
REPORT_GAP_MS = HOUR_MS
NO_SOURCE = -1


@dataclass(frozen=True)
class LabelRows:
    tx: np.ndarray  # int64 index into the (sorted) transactions
    is_fraud: np.ndarray  # bool
    reported_at: np.ndarray  # int64 ms
    source: np.ndarray  # int8 index into SOURCES, or NO_SOURCE


def make_labels(
    config: SimulationConfig,
    population: Population,
    tx: TxBatch,
    rng: np.random.Generator,
) -> LabelRows:
    """Label rows for the time-sorted transactions ``tx``, sorted by report time."""
    fraud = _fraud_labels(config, tx, rng)
    genuine = _genuine_labels(config, population, tx, rng)
    rows = [fraud, genuine]
    if config.label_all:
        rows.append(_matured(config, tx, np.concatenate([fraud.tx, genuine.tx])))
    merged = LabelRows(
        *(np.concatenate([getattr(r, f) for r in rows]) for f in LabelRows.__dataclass_fields__)
    )
    order = np.lexsort((merged.tx, merged.reported_at))
    return LabelRows(*(getattr(merged, f)[order] for f in LabelRows.__dataclass_fields__))


def _lognormal_days(
    rng: np.random.Generator, table: dict[int, tuple[float, float]], source: np.ndarray
) -> np.ndarray:
    median = np.array([table[s][0] for s in range(len(table))])[source]
    sigma = np.array([table[s][1] for s in range(len(table))])[source]
    return median * np.exp(sigma * rng.standard_normal(source.size))


def _fraud_labels(config: SimulationConfig, tx: TxBatch, rng: np.random.Generator) -> LabelRows:
    index = np.flatnonzero(tx.fraud_type != GENUINE)
    kind = tx.fraud_type[index].astype(np.int64)
    # Incident keys are unique per typology; combine them into one id per (typology, incident).
    key = kind * (np.int64(1) << 40) + tx.incident[index]
    incidents, inverse = np.unique(key, return_inverse=True)
    first_ts = np.full(incidents.size, np.iinfo(np.int64).max)
    np.minimum.at(first_ts, inverse, tx.ts[index])
    incident_kind = (incidents >> 40).astype(np.int64)

    shares = np.array([t.sources for t in ALL])
    cum = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)[incident_kind]
    source = np.minimum((rng.random(incidents.size)[:, None] > cum).sum(axis=1), 2)
    cap = config.max_label_delay_days * DAY_MS
    delay = np.clip(_lognormal_days(rng, FRAUD_DELAY, source) * DAY_MS, MIN_DELAY_MS, cap)
    report = first_ts + delay.astype(np.int64)

    ts = tx.ts[index]
    # Chargebacks and disputes are filed item by item: a few hours apart.
    jitter = (rng.random(index.size) * 4 * HOUR_MS).astype(np.int64)
    reported = np.maximum(report[inverse], ts + REPORT_GAP_MS) + jitter
    reported = np.minimum(reported, ts + int(cap))
    return LabelRows(
        tx=index,
        is_fraud=np.ones(index.size, dtype=bool),
        reported_at=reported,
        source=source[inverse].astype(np.int8),
    )


def _genuine_labels(
    config: SimulationConfig, population: Population, tx: TxBatch, rng: np.random.Generator
) -> LabelRows:
    genuine = np.flatnonzero(tx.fraud_type == GENUINE)
    if config.genuine_label_share <= 0 or genuine.size == 0:
        return _empty()
    card = tx.card[genuine]
    foreign = tx_country(population, tx.merchant[genuine]) != population.cards.country[card]
    large = tx.amount_eur[genuine] > 3 * np.exp(population.cards.log_amount[card])
    # Alerts (and so analyst verdicts) concentrate on unusual transactions.
    weight = 1.0 + 4.0 * foreign + 4.0 * large
    p = np.minimum(1.0, config.genuine_label_share * weight / weight.mean())
    chosen = genuine[rng.random(genuine.size) < p]
    source = np.where(rng.random(chosen.size) < GENUINE_CUSTOMER_SHARE, CUSTOMER, ANALYST)
    cap = config.max_label_delay_days * DAY_MS
    delay = np.clip(_lognormal_days(rng, GENUINE_DELAY, source) * DAY_MS, MIN_DELAY_MS, cap)
    return LabelRows(
        tx=chosen,
        is_fraud=np.zeros(chosen.size, dtype=bool),
        reported_at=tx.ts[chosen] + delay.astype(np.int64),
        source=source.astype(np.int8),
    )


def _matured(config: SimulationConfig, tx: TxBatch, labelled: np.ndarray) -> LabelRows:
    rest = np.ones(len(tx), dtype=bool)
    rest[labelled] = False
    rest &= tx.fraud_type == GENUINE
    index = np.flatnonzero(rest)
    maturity = int(config.label_maturity_days * DAY_MS)
    return LabelRows(
        tx=index,
        is_fraud=np.zeros(index.size, dtype=bool),
        reported_at=tx.ts[index] + maturity,
        source=np.full(index.size, NO_SOURCE, dtype=np.int8),
    )


def _empty() -> LabelRows:
    return LabelRows(
        tx=np.zeros(0, np.int64),
        is_fraud=np.zeros(0, bool),
        reported_at=np.zeros(0, np.int64),
        source=np.zeros(0, np.int8),
    )


def tx_country(population: Population, merchant: np.ndarray) -> np.ndarray:
    return population.merchants.country[merchant]
