"""Card testing: a bot probes stolen card data with a burst of tiny online payments.

Signature: several 0.5–8 EUR e-commerce payments on one card within minutes, at small online shops
(often abroad), at any hour; in 60 % of incidents a large online cash-out purchase follows within
two days once the card is known to work.
"""

from __future__ import annotations

import numpy as np

from training.simulator.batch import TxBatch
from training.simulator.rhythms import HOUR_MS
from training.simulator.typologies.base import (
    FraudContext,
    Typology,
    day_start_ms,
    fraud_batch,
    incident_days,
    repeat_per_incident,
    victims_uniform,
)

PROBES_MIN, PROBES_EXTRA = 2, 3.0  # probes per incident: 2 + Poisson(3)
CASH_OUT_SHARE = 0.6
PROBE_GAP_S = 90.0  # mean seconds between probes
FOREIGN_SHOP_SHARE = 0.6
FIXED_PROBES = np.array([0.5, 1.0, 1.0, 2.0, 5.0])  # bots like round test amounts


def generate(ctx: FraudContext, per_day: np.ndarray, rng: np.random.Generator) -> TxBatch:
    day = incident_days(ctx, per_day)
    n = day.size
    card = victims_uniform(ctx, n, rng)
    # Bots run around the clock: the hour is uniform in UTC, so often night for the cardholder.
    start = day_start_ms(ctx, day) + (rng.random(n) * 24 * HOUR_MS).astype(np.int64)
    abroad = rng.random(n) < FOREIGN_SHOP_SHARE
    home = ctx.population.cards.country[card]
    pools = ctx.population.pools
    shop = pools.pick_home_or_abroad(rng, "testing", home, abroad)

    probes = PROBES_MIN + rng.poisson(PROBES_EXTRA, n)
    incident, position = repeat_per_incident(probes)
    gaps = rng.exponential(PROBE_GAP_S * 1000.0, incident.size).astype(np.int64)
    gaps[position == 0] = 0
    offset = _cumsum_within(gaps, position)
    # Mostly the same shop; a quarter of probes hop to another small shop.
    probe_shop = shop[incident]
    hop = rng.random(incident.size) < 0.25
    hopper = incident[hop]
    probe_shop[hop] = pools.pick_home_or_abroad(rng, "testing", home[hopper], abroad[hopper])
    amount = np.where(
        rng.random(incident.size) < 0.5,
        FIXED_PROBES[rng.integers(0, FIXED_PROBES.size, incident.size)],
        rng.uniform(0.5, 8.0, incident.size),
    )

    cash = np.flatnonzero(rng.random(n) < CASH_OUT_SHARE)
    burst_end = start[cash] + np.bincount(incident, weights=gaps, minlength=n)[cash].astype(
        np.int64
    )
    cash_ts = burst_end + (rng.uniform(0.5, 48.0, cash.size) * HOUR_MS).astype(np.int64)
    cash_shop = pools.pick_home_or_abroad(rng, "cash_out", home[cash], abroad[cash])
    cash_amount = 350.0 * np.exp(0.6 * rng.standard_normal(cash.size))

    return fraud_batch(
        ctx,
        rng,
        card=np.concatenate([card[incident], card[cash]]),
        ts=np.concatenate([start[incident] + offset, cash_ts]),
        amount_eur=np.concatenate([amount, cash_amount]),
        merchant=np.concatenate([probe_shop, cash_shop]),
        incident=np.concatenate([incident, cash]),
    )


def _cumsum_within(values: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Running sum restarting at each incident (position == 0)."""
    total = np.cumsum(values)
    first = np.flatnonzero(position == 0)
    base = np.repeat(total[first] - values[first], np.diff(np.append(first, values.size)))
    return total - base


TYPOLOGY = Typology(
    name="card_testing",
    mean_transactions=PROBES_MIN + PROBES_EXTRA + CASH_OUT_SHARE,
    generate=generate,
    sources=(0.25, 0.45, 0.30),
)
