"""Stolen card abroad: card data used far from the cardholder's home.

Signature: 1 + Poisson(2.5) transactions within 0.2–3 days in one foreign country (70 % long-haul,
30 % elsewhere in Europe): in-person with a cloned card (pos, ATM) or online at that country's
shops, in the local hours of that country, for a few hundred EUR. Genuine travellers produce the
same country novelty, which is what keeps this typology from being trivial.
"""

from __future__ import annotations

import numpy as np

from training.simulator import catalog as cat
from training.simulator.batch import TxBatch
from training.simulator.rhythms import profile_hours, to_utc_ms
from training.simulator.typologies.base import (
    FraudContext,
    Typology,
    day_start_ms,
    fraud_batch,
    incident_days,
    repeat_per_incident,
    victims_uniform,
)

EXTRA_TRANSACTIONS = 2.5
FAR_SHARE = 0.7
ONLINE_SHARE = 0.4
AMOUNT_MEDIAN, AMOUNT_SIGMA = 150.0, 0.8


def generate(ctx: FraudContext, per_day: np.ndarray, rng: np.random.Generator) -> TxBatch:
    day = incident_days(ctx, per_day)
    n = day.size
    pop = ctx.population
    card = victims_uniform(ctx, n, rng)
    country = _foreign_country(rng, pop.cards.country[card])
    span_days = rng.uniform(0.2, 3.0, n)

    counts = 1 + rng.poisson(EXTRA_TRANSACTIONS, n)
    incident, _ = repeat_per_incident(counts)
    m = incident.size
    where = country[incident]
    # Spread over the incident's days, at the local hours of the country where the card is used.
    day_offset = np.floor(rng.random(m) * span_days[incident]).astype(np.int64)
    ts = to_utc_ms(
        day_start_ms(ctx, day[incident] + day_offset), profile_hours(rng, m, False), where
    ) + rng.integers(0, 60_000, m)
    online = rng.random(m) < ONLINE_SHARE
    merchant = np.where(
        online, pop.pools.pick(rng, "online", where), pop.pools.pick(rng, "physical", where)
    )
    scale = cat.CATEGORY_AMOUNT_SCALE[pop.merchants.category[merchant]]
    amount = AMOUNT_MEDIAN * np.sqrt(scale) * np.exp(AMOUNT_SIGMA * rng.standard_normal(m))
    return fraud_batch(
        ctx,
        rng,
        card=card[incident],
        ts=ts,
        amount_eur=amount,
        merchant=merchant,
        incident=incident,
    )


def _foreign_country(rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
    far = np.flatnonzero(cat.COUNTRY_ZONE == cat.ZONE_FAR)
    europe = np.flatnonzero(cat.COUNTRY_ZONE != cat.ZONE_FAR)
    country = np.where(
        rng.random(home.size) < FAR_SHARE,
        far[rng.integers(0, far.size, home.size)],
        europe[rng.integers(0, europe.size, home.size)],
    )
    # Never the card's own country: move clashes to the first far country.
    return np.where(country == home, far[0], country)


TYPOLOGY = Typology(
    name="stolen_card_abroad",
    mean_transactions=1 + EXTRA_TRANSACTIONS,
    generate=generate,
    sources=(0.25, 0.45, 0.30),
)
