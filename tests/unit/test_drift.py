"""Drift (PSI) against the training reference: stable traffic reads ~0, shifted traffic > 0.25."""

from __future__ import annotations

import numpy as np

from scoring.drift import (
    SCORE,
    WARN_PSI,
    DriftMonitor,
    _bucket,
    psi,
    reference_from,
    reference_of,
)

NAMES = ["amount", "count", "sparse"]


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    X = np.column_stack(
        [
            rng.lognormal(3.0 + shift, 1.0, n),
            rng.poisson(3.0, n).astype(float),
            np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        ]
    )
    scores = 1 / (1 + np.exp(-(X[:, 0] / 50 - 3)))
    return X, scores


def test_reference_is_json_ready_with_a_missing_bin() -> None:
    X, scores = _rows(np.random.default_rng(1), 20_000)
    reference = reference_from(X, scores, NAMES)
    assert set(reference) == {*NAMES, SCORE}
    for entry in reference.values():
        assert len(entry["shares"]) == len(entry["edges"]) + 2  # below, between, above, NaN
        assert abs(sum(entry["shares"]) - 1.0) < 1e-9
    assert abs(reference["sparse"]["shares"][-1] - 0.3) < 0.02  # the NaN share
    assert reference_of({"drift_reference": reference}) is reference
    assert reference_of({}) is None


def test_same_distribution_is_stable_and_a_shift_is_flagged() -> None:
    rng = np.random.default_rng(2)
    X, scores = _rows(rng, 50_000)
    reference = reference_from(X, scores, NAMES)

    same = DriftMonitor(reference, NAMES)
    for _ in range(10):
        same.update(*_rows(rng, 5_000))
    stable = same.psi()
    assert max(stable.values()) < 0.02

    moved = DriftMonitor(reference, NAMES)
    for _ in range(10):
        moved.update(*_rows(rng, 5_000, shift=1.0))  # amounts e times larger
    shifted = moved.psi()
    assert shifted["amount"] > WARN_PSI and shifted[SCORE] > WARN_PSI
    assert shifted["count"] < 0.02  # what did not move reads stable


def test_recent_traffic_outweighs_old_traffic() -> None:
    rng = np.random.default_rng(3)
    X, scores = _rows(rng, 50_000)
    monitor = DriftMonitor(reference_from(X, scores, NAMES), NAMES, half_life_rows=5_000)
    monitor.update(*_rows(rng, 20_000, shift=1.0))
    assert monitor.psi()["amount"] > WARN_PSI
    for _ in range(20):  # back to normal for 20 half-lives
        monitor.update(*_rows(rng, 5_000))
    assert monitor.psi()["amount"] < 0.05


def test_live_counts_bin_values_as_the_reference_does() -> None:
    """The monitor's kernel puts every value where the reference's numpy bucketing puts it:
    values equal to an edge go right of it, NaN into the last bin, beyond the edges at the ends."""
    rng = np.random.default_rng(5)
    X, scores = _rows(rng, 5_000)
    reference = reference_from(X, scores, NAMES)
    live, live_scores = _rows(rng, 3_000, shift=0.5)
    edges = reference["amount"]["edges"]
    live[:40, NAMES.index("amount")] = np.repeat(edges, 40 // len(edges) + 1)[:40]  # on edges
    live[40:45, NAMES.index("amount")] = [-1e9, 1e9, np.inf, -np.inf, np.nan]
    monitor = DriftMonitor(reference, NAMES, half_life_rows=1e12)  # no decay within the test
    monitor.update(live[:1000], live_scores[:1000])
    monitor.update(live[1000:], live_scores[1000:])
    for j, name in enumerate(NAMES):
        expected = np.bincount(
            _bucket(live[:, j], reference[name]["edges"]),
            minlength=len(reference[name]["edges"]) + 2,
        )
        np.testing.assert_allclose(monitor.counts(name), expected)
    np.testing.assert_allclose(
        monitor.counts(SCORE),
        np.bincount(
            _bucket(live_scores, reference[SCORE]["edges"]),
            minlength=len(reference[SCORE]["edges"]) + 2,
        ),
    )


def test_psi_is_zero_for_equal_shares_and_finite_for_empty_bins() -> None:
    shares = np.array([0.2, 0.3, 0.5])
    assert psi(shares, shares) == 0.0
    assert np.isfinite(psi(np.array([1.0, 0.0, 0.0]), shares))
    assert (
        DriftMonitor(reference_from(*_rows(np.random.default_rng(4), 100), NAMES), NAMES).psi()
        == {}
    )
