"""When transactions happen: daily and weekly rhythms, per-card habits, local time → UTC."""

from __future__ import annotations

import numpy as np

from training.simulator import catalog as cat
from training.simulator.population import DAY_MS, Cards

HOUR_MS = 3_600_000


def weekday(start_ms: int, day: int) -> int:
    """Day of week (Monday = 0) of simulated day ``day``; 1970-01-01 was a Thursday."""
    return int((start_ms // DAY_MS + day + 3) % 7)


def profile_hours(rng: np.random.Generator, size: int, weekend: bool) -> np.ndarray:
    """Local hours (float, 0–24) drawn from the population's daily rhythm."""
    profile = cat.HOURLY_WEEKEND if weekend else cat.HOURLY_WEEKDAY
    hour = rng.choice(24, size=size, p=profile / profile.sum())
    return hour + rng.random(size)


def card_hours(
    rng: np.random.Generator, cards: Cards, card: np.ndarray, weekend: bool
) -> np.ndarray:
    """Local hours for genuine transactions of ``card``: the daily rhythm bent by its habits.

    Each card shifts the rhythm (early birds, night owls) and sends a share of its purchases
    around a personal preferred hour, so "unusual hour for this card" is a meaningful feature.
    """
    hours = profile_hours(rng, card.size, weekend) + cards.hour_shift[card]
    at_peak = rng.random(card.size) < cards.peak_share[card]
    hours[at_peak] = cards.peak_hour[card[at_peak]] + rng.normal(0.0, 1.0, int(at_peak.sum()))
    return np.mod(hours, 24.0)


def to_utc_ms(
    day_start_ms: int | np.ndarray, local_hours: np.ndarray, country: np.ndarray
) -> np.ndarray:
    """Epoch ms of a local hour in ``country`` on the simulated day starting at ``day_start_ms``.

    Wraps within the day (mod 24 h) so every transaction stays inside its simulated day.
    """
    utc_hours = np.mod(local_hours - cat.COUNTRY_UTC_OFFSET[country], 24.0)
    return np.asarray(day_start_ms, dtype=np.int64) + (utc_hours * HOUR_MS).astype(np.int64)
