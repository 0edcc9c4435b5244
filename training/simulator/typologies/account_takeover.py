"""Account takeover: a fraudster gains control of an existing card's account for a few days.

Signature on a card with a history: over 1–5 days, 3 + Poisson(4) purchases whose amounts jump to
1.5–10x the card's usual level, at merchants it never used (resellable goods online), often abroad,
mostly e-commerce, at the fraudster's hours. The owner keeps using the card meanwhile.
"""

from __future__ import annotations

import numpy as np

from training.simulator import catalog as cat
from training.simulator.batch import TxBatch
from training.simulator.population import DAY_MS
from training.simulator.typologies.base import (
    FraudContext,
    Typology,
    day_start_ms,
    fraud_batch,
    incident_days,
    repeat_per_incident,
    typical_amount,
    victims_by_activity,
)

EXTRA_TRANSACTIONS = 4.0  # 3 + Poisson(4) per incident
SHIFT_MEDIAN, SHIFT_SIGMA = 4.0, 0.5  # the incident's amount multiplier (lognormal)
FOREIGN_SHARE = 0.45


def generate(ctx: FraudContext, per_day: np.ndarray, rng: np.random.Generator) -> TxBatch:
    day = incident_days(ctx, per_day)
    n = day.size
    card = victims_by_activity(ctx, n, rng)
    start = day_start_ms(ctx, day) + (rng.random(n) * DAY_MS).astype(np.int64)
    duration = rng.uniform(1.0, 5.0, n) * DAY_MS
    abroad = rng.random(n) < FOREIGN_SHARE
    home_country = ctx.population.cards.country[card]
    shift = SHIFT_MEDIAN * np.exp(SHIFT_SIGMA * rng.standard_normal(n))

    counts = 3 + rng.poisson(EXTRA_TRANSACTIONS, n)
    incident, _ = repeat_per_incident(counts)
    m = incident.size
    ts = start[incident] + (rng.random(m) * duration[incident]).astype(np.int64)
    merchant = ctx.population.pools.pick_home_or_abroad(
        rng, "cash_out", home_country[incident], abroad[incident]
    )
    # A fifth of the purchases are everyday online spending in the card's country (delivery,
    # rides): less suspicious on their own.
    everyday = rng.random(m) < 0.2
    merchant[everyday] = ctx.population.pools.pick(rng, "online", home_country[incident[everyday]])
    scale = cat.CATEGORY_AMOUNT_SCALE[ctx.population.merchants.category[merchant]]
    amount = (
        typical_amount(ctx, card[incident])
        * np.sqrt(scale)
        * shift[incident]
        * np.exp(0.4 * rng.standard_normal(m))
    )
    return fraud_batch(
        ctx,
        rng,
        card=card[incident],
        ts=ts,
        amount_eur=amount,
        merchant=merchant,
        incident=incident,
    )


TYPOLOGY = Typology(
    name="account_takeover",
    mean_transactions=3 + EXTRA_TRANSACTIONS,
    generate=generate,
    sources=(0.20, 0.55, 0.25),
)
