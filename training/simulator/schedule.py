"""The fraud budget over time: overall rate, typology mix and its drift, the new typology's ramp.

Day d (t = d / (days - 1) from 0 to 1):

* fraud rate r(d) = fraud_rate × (1 + fraud_rate_drift × t), as a share of all transactions;
* mix of the established typologies: (1 - t) × mix_start + t × mix_end (each normalised);
* the new typology takes new_typology_share of the budget from new_typology_day on, ramping
  linearly over RAMP_DAYS; the others shrink in proportion.

The fraud transactions of a day (r / (1 - r) × that day's genuine count) are split by the mix and
turned into incident counts with each typology's mean transactions per incident.
"""

from __future__ import annotations

import numpy as np

from training.simulator.config import SimulationConfig
from training.simulator.sampling import systematic_counts
from training.simulator.typologies import ALL, ESTABLISHED, NEW

RAMP_DAYS = 3


def mix_by_day(config: SimulationConfig) -> np.ndarray:
    """(typologies, days) share of the fraud budget; rows in ``typologies.ALL`` order."""
    days = config.days
    t = np.arange(days) / max(days - 1, 1)
    start = np.array(config.mix_start.weights())
    end = np.array(config.mix_end.weights())
    established = (1 - t)[None, :] * (start / start.sum())[:, None] + t[None, :] * (
        end / end.sum()
    )[:, None]
    new = np.zeros((len(NEW), days))
    if config.new_typology_day is not None:
        row = list(NEW).index(config.new_typology)
        since = np.arange(days) - config.new_typology_day
        ramp = np.clip((since + 1) / RAMP_DAYS, 0.0, 1.0)
        new[row] = config.new_typology_share * ramp
    return np.vstack([established * (1 - new.sum(axis=0))[None, :], new])


def fraud_rate_by_day(config: SimulationConfig) -> np.ndarray:
    t = np.arange(config.days) / max(config.days - 1, 1)
    return config.fraud_rate * (1 + config.fraud_rate_drift * t)


def incidents_by_day(
    config: SimulationConfig, genuine_per_day: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Integer incident counts per day for each typology (``typologies.ALL`` order).

    A typology with ``lead_days`` gets that many extra days in front, at the first day's rate.
    """
    rate = fraud_rate_by_day(config)
    fraud_transactions = rate / (1 - rate) * genuine_per_day
    mean = np.array([t.mean_transactions for t in ALL])
    expected = mix_by_day(config) * fraud_transactions[None, :] / mean[:, None]
    counts = []
    for typology, row in zip(ALL, expected, strict=True):
        lead = np.full(typology.lead_days, row[0])
        counts.append(systematic_counts(np.concatenate([lead, row]), rng))
    if config.new_typology_day is not None:
        # "Switched on at day D" means the first attack happens on day D, in any world size.
        new = counts[len(ESTABLISHED) + list(NEW).index(config.new_typology)]
        new[config.new_typology_day] = max(1, new[config.new_typology_day])
    return counts
