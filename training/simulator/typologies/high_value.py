"""High value: a rare, single large purchase far above the card's own history.

Signature: one (15 %: two within two hours) purchase at a big-ticket merchant (electronics,
jewellery, airlines, hotels) of about 4x the card's typical amount at that category, i.e. well
above its usual range; domestic in person or online, 30 % at foreign online shops. Genuine big
purchases (0.4 % of genuine traffic, ~2.5x) overlap its lower tail.
"""

from __future__ import annotations

import numpy as np

from training.simulator import catalog as cat
from training.simulator.batch import TxBatch
from training.simulator.rhythms import HOUR_MS, profile_hours, to_utc_ms
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

SECOND_SHARE = 0.15
MULTIPLIER_MEDIAN, MULTIPLIER_SIGMA = 4.0, 0.5
FOREIGN_ONLINE_SHARE = 0.3


def generate(ctx: FraudContext, per_day: np.ndarray, rng: np.random.Generator) -> TxBatch:
    day = incident_days(ctx, per_day)
    n = day.size
    pop = ctx.population
    card = victims_by_activity(ctx, n, rng)
    home = pop.cards.country[card]
    first_ts = to_utc_ms(day_start_ms(ctx, day), profile_hours(rng, n, False), home)

    counts = 1 + (rng.random(n) < SECOND_SHARE)
    incident, position = repeat_per_incident(counts)
    m = incident.size
    ts = first_ts[incident] + (position * rng.uniform(0.1, 2.0, m) * HOUR_MS).astype(np.int64)
    foreign = rng.random(m) < FOREIGN_ONLINE_SHARE
    merchant = np.where(
        foreign,
        pop.pools.pick(rng, "cash_out_abroad", np.zeros(m, np.int64)),
        pop.pools.pick(rng, "big_ticket", home[incident]),
    )
    scale = cat.CATEGORY_AMOUNT_SCALE[pop.merchants.category[merchant]]
    amount = (
        typical_amount(ctx, card[incident])
        * scale
        * MULTIPLIER_MEDIAN
        * np.exp(MULTIPLIER_SIGMA * rng.standard_normal(m))
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
    name="high_value",
    mean_transactions=1 + SECOND_SHARE,
    generate=generate,
    sources=(0.20, 0.60, 0.20),
)
