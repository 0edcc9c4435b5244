"""Hot model swaps: the canary check and ModelFollower on a real registry (small LightGBM models
with the real feature list, compiled when registered)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from scoring.announcements import ModelAnnouncement, announcement_for
from scoring.features import FEATURE_NAMES
from scoring.model_swap import ModelFollower, ModelRefusedError, SwapOutcome, check_canary
from scoring.registry import LoadedModel, ModelRegistry
from tests.test_registry import FEATURES, SINGLE_TREE, flip_a_byte, version_dir

WAIT_S = 60.0  # a load verifies digests and maps a library: well under a second here


def _booster(seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, len(FEATURE_NAMES)))
    y = (X[:, seed % 5] + 0.3 * rng.normal(size=600) > 0.4).astype(int)
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "num_leaves": 7}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)


def canary_rows(n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, len(FEATURE_NAMES)))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


@dataclass(frozen=True)
class Versions:
    registry: ModelRegistry
    first: str  # real feature list
    second: str  # real feature list
    third: str  # real feature list
    other_schema: str  # the 4-feature single tree of tests/models


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    root = tmp_path_factory.mktemp("swap")
    registry = ModelRegistry(root / "registry", cache_dir=root / "cache")
    real = [
        registry.register(_booster(seed), feature_names=list(FEATURE_NAMES)).version
        for seed in (0, 1, 2)
    ]
    other = registry.register(SINGLE_TREE, feature_names=FEATURES).version
    return Versions(registry, real[0], real[1], real[2], other)


def announce(registry: ModelRegistry, version: str, alias: str = "champion") -> ModelAnnouncement:
    """Move ``alias`` to ``version`` and build its announcement, as the promote command does."""
    previous = registry.aliases().get(alias)
    registry.promote(version, alias)
    return announcement_for(registry, alias, previous.version if previous else None)


def wait_ready(follower: ModelFollower, timeout: float = WAIT_S) -> SwapOutcome:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = follower.ready(canary_rows)
        if outcome is not None:
            return outcome
        time.sleep(0.01)
    raise AssertionError("no load finished")


@pytest.fixture
def follower(versions: Versions) -> Iterator[ModelFollower]:
    announce(versions.registry, versions.first)
    follower = ModelFollower(versions.registry, "champion", versions.first)
    yield follower
    follower.close()


# ------------------------------------------------------------------------------------ canary


class Skewed:
    """A loaded model whose compiled scorer is off by ``delta``."""

    def __init__(self, model: LoadedModel, delta: float) -> None:
        self.model, self.delta = model, delta
        self.booster = model.booster
        self.version = model.version
        self.feature_names = model.feature_names

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return self.model.score_many(X) + self.delta


def test_the_canary_passes_for_a_registered_model(versions: Versions) -> None:
    model = versions.registry.load(versions.first, allow_gtil=False)
    check_canary(model, canary_rows())
    check_canary(model, canary_rows()[:0])  # no recent rows yet: an all-missing row
    check_canary(Skewed(model, 5e-7), canary_rows())  # type: ignore[arg-type]  # within 1e-6


@pytest.mark.parametrize("delta", [1e-3, -1e-3, 2.0, float("nan")])
def test_the_canary_refuses_a_scorer_that_disagrees(versions: Versions, delta: float) -> None:
    model = versions.registry.load(versions.first, allow_gtil=False)
    with pytest.raises(ModelRefusedError) as refused:
        check_canary(Skewed(model, delta), canary_rows())  # type: ignore[arg-type]
    assert refused.value.reason == "canary"
    assert versions.first in str(refused.value)


# ---------------------------------------------------------------------------------- follower


def test_a_good_announcement_is_loaded_and_checked(
    versions: Versions, follower: ModelFollower
) -> None:
    announcement = announce(versions.registry, versions.second)
    assert announcement.previous_version == versions.first
    asked: list[int] = []

    def rows() -> np.ndarray:
        asked.append(1)
        return canary_rows()

    assert follower.offer(announcement.to_bytes(), rows) == "loading"
    assert asked == [1]  # the canary batch is taken when the load starts
    outcome = wait_ready(follower)
    assert outcome.refused is None
    assert outcome.announcement == announcement
    assert outcome.model is not None and outcome.model.version == versions.second
    assert list(outcome.model.feature_names) == list(FEATURE_NAMES)
    assert follower.current == versions.second
    assert follower.ready(canary_rows) is None  # nothing pending any more
    # The model now served is announced again (a replica restarting, compaction): ignored.
    assert follower.offer(announcement.to_bytes(), canary_rows) == "ignored"


def test_a_newer_announcement_during_a_load_is_loaded_next(
    versions: Versions, follower: ModelFollower
) -> None:
    second = announce(versions.registry, versions.second)
    third = announce(versions.registry, versions.third)
    assert follower.offer(second.to_bytes(), canary_rows) == "loading"
    assert follower.offer(third.to_bytes(), canary_rows) == "loading"
    # the superseded second version is never swapped in; the third is loaded next
    outcome = wait_ready(follower)
    assert outcome.model is not None and outcome.model.version == versions.third
    assert follower.current == versions.third


def test_a_digest_mismatch_is_refused_for_integrity(
    versions: Versions, follower: ModelFollower
) -> None:
    announcement = announce(versions.registry, versions.second)
    forged = announcement.model_copy(update={"manifest_digest": "0" * 64})
    assert follower.offer(forged.to_bytes(), canary_rows) == "loading"
    outcome = wait_ready(follower)
    assert outcome.model is None and outcome.refused is not None
    assert outcome.refused.reason == "integrity"
    assert follower.current == versions.first  # the previous model keeps serving


def test_a_tampered_artifact_is_refused_for_integrity(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry", cache_dir=tmp_path / "cache")
    good = registry.register(_booster(3), feature_names=list(FEATURE_NAMES)).version
    bad = registry.register(_booster(4), feature_names=list(FEATURE_NAMES)).version
    announce(registry, good)
    announcement = announce(registry, bad)
    flip_a_byte(version_dir(registry, bad) / "model.txt")
    follower = ModelFollower(registry, "champion", good)
    try:
        assert follower.offer(announcement.to_bytes(), canary_rows) == "loading"
        outcome = wait_ready(follower)
        assert outcome.refused is not None and outcome.refused.reason == "integrity"
        assert follower.current == good
    finally:
        follower.close()


def test_a_model_of_another_feature_schema_is_refused(
    versions: Versions, follower: ModelFollower
) -> None:
    announcement = announce(versions.registry, versions.other_schema)
    assert follower.offer(announcement.to_bytes(), canary_rows) == "loading"
    outcome = wait_ready(follower)
    assert outcome.model is None and outcome.refused is not None
    assert outcome.refused.reason == "schema"
    assert follower.current == versions.first


def test_an_unknown_version_is_refused_as_unknown(
    versions: Versions, follower: ModelFollower
) -> None:
    announcement = announce(versions.registry, versions.second)
    missing = announcement.model_copy(update={"version": "v0999-deadbeef"})
    assert follower.offer(missing.to_bytes(), canary_rows) == "loading"
    outcome = wait_ready(follower)
    assert outcome.refused is not None and outcome.refused.reason == "unknown"
    assert follower.current == versions.first


def test_what_is_not_for_this_follower_is_ignored(
    versions: Versions, follower: ModelFollower
) -> None:
    def no_rows() -> np.ndarray:
        raise AssertionError("nothing should be loaded")

    challenger = announce(versions.registry, versions.second, alias="challenger")
    assert follower.offer(challenger.to_bytes(), no_rows) == "ignored"  # another alias
    assert follower.offer(b"{not json", no_rows) == "ignored"
    assert follower.offer(b'{"alias": "champion"}', no_rows) == "ignored"  # fields missing
    assert follower.offer(None, no_rows) == "ignored"  # a tombstone
    current = announce(versions.registry, versions.first)
    assert follower.offer(current.to_bytes(), no_rows) == "ignored"  # already served
    pinned = ModelFollower(versions.registry, None, versions.first)
    try:
        champion = announce(versions.registry, versions.second)
        assert pinned.offer(champion.to_bytes(), no_rows) == "ignored"  # a pinned version
    finally:
        pinned.close()
    assert follower.ready(no_rows) is None
    assert follower.current == versions.first


def test_a_rollback_during_a_load_keeps_the_current_model(
    versions: Versions, follower: ModelFollower
) -> None:
    forward = announce(versions.registry, versions.second)
    assert follower.offer(forward.to_bytes(), canary_rows) == "loading"
    back = announce(versions.registry, versions.first)  # champion rolled back at once
    follower.offer(back.to_bytes(), canary_rows)
    deadline = time.monotonic() + 3.0
    swapped_to: list[str] = []
    while time.monotonic() < deadline:
        outcome = follower.ready(canary_rows)
        if outcome is not None and outcome.model is not None:
            swapped_to.append(outcome.model.version)
            if outcome.model.version != versions.first:
                break
        time.sleep(0.01)
    # The alias names the served version again: the worker must end up serving it.
    assert follower.current == versions.first
    assert versions.second not in swapped_to or swapped_to[-1] == versions.first
