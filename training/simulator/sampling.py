"""Random streams and vectorised sampling helpers shared by the simulator's stages."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per named stage.

    Keyed by (seed, crc32(name)) rather than drawn from one shared generator, so changing how many
    numbers one stage draws never shifts another stage's output, and Python's randomised ``hash``
    never enters.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def systematic_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts per slot whose running total never strays more than 1 from the expectation.

    Systematic sampling (one uniform phase) instead of independent Poisson draws: a typology with
    an expectation of 3 incidents in the period gets 3, not sometimes 0, so small test worlds still
    contain every typology and the fraud rate stays close to its target.
    """
    cumulative = np.cumsum(np.asarray(expected, dtype=np.float64))
    phase = rng.random()
    edges = np.floor(cumulative + phase).astype(np.int64)
    return np.diff(edges, prepend=np.int64(np.floor(phase)))


class GroupSampler:
    """Draw items by weight within a group (e.g. a merchant of country c, weighted by popularity).

    One cumulative-weight array over the items sorted by group; a draw for group g is a uniform
    number inside g's slice of the cumulative sum, found with ``searchsorted``. That is O(log n)
    per draw with no Python loop, whatever the mix of groups in one call.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        groups = np.asarray(groups, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if np.any(weights <= 0):
            raise ValueError("weights must be positive")
        order = np.argsort(groups, kind="stable")
        self.items = order
        self.cum = np.cumsum(weights[order])
        sorted_groups = groups[order]
        keys = np.arange(n_groups)
        self.starts = np.searchsorted(sorted_groups, keys, side="left")
        self.ends = np.searchsorted(sorted_groups, keys, side="right")
        self.lo = np.where(self.starts > 0, self.cum[np.maximum(self.starts - 1, 0)], 0.0)
        self.hi = np.where(self.ends > 0, self.cum[np.maximum(self.ends - 1, 0)], 0.0)

    def size(self, group: np.ndarray | int) -> np.ndarray:
        return np.asarray(self.ends[group] - self.starts[group])

    def sample(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        """One item per entry of ``group``; every group asked for must be non-empty."""
        group = np.asarray(group, dtype=np.int64)
        if group.size == 0:
            return np.zeros(0, dtype=np.int64)
        if np.any(self.ends[group] <= self.starts[group]):
            raise ValueError("sampling from an empty group")
        u = self.lo[group] + rng.random(group.size) * (self.hi[group] - self.lo[group])
        pos = np.searchsorted(self.cum, u, side="right")
        # Floating-point rounding can land one past the slice; clamp into it.
        pos = np.clip(pos, self.starts[group], self.ends[group] - 1)
        return self.items[pos]


def lognormal_median(
    rng: np.random.Generator, median: float | np.ndarray, sigma: float | np.ndarray, size: int
) -> np.ndarray:
    """Lognormal draws parametrised by their median (what the docs quote) and log-sd."""
    return np.asarray(median) * np.exp(np.asarray(sigma) * rng.standard_normal(size))
