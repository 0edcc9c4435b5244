"""Hot model swaps: follow ``model-updates``, load the new champion beside the old, check it, swap.

Loading (digest checks, maybe a native build) runs on a background thread while the worker keeps
scoring with the current model. The swap itself happens in the worker's loop between two batches,
so every batch is scored by exactly one fully loaded model. A new model must pass, before it is
used: the announcement's manifest digest, the artifacts' SHA-256 (checked by the registry), the
feature schema of the running engine, and a canary batch of recent feature rows on which the
compiled library agrees with LightGBM (|Δ| ≤ 1e-6) and gives probabilities. A model that fails any
of them is refused and logged; the previous model keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from scoring.announcements import BadAnnouncement, ModelAnnouncement
from scoring.compiled import ModelIntegrityError
from scoring.features import catalog
from scoring.registry import LoadedModel, ModelRegistry, RegistryError

log = logging.getLogger("fraudstream.models")
CANARY_TOLERANCE = 1e-6


class ModelRefusedError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # integrity | schema | canary | unknown


@dataclass(frozen=True)
class SwapOutcome:
    announcement: ModelAnnouncement
    model: LoadedModel | None
    refused: ModelRefusedError | None


def check_canary(model: LoadedModel, rows: np.ndarray) -> None:
    """The compiled library must agree with LightGBM on ``rows`` and give probabilities."""
    if rows.shape[0] == 0:
        rows = np.full((1, len(model.feature_names)), np.nan)
    compiled = np.asarray(model.score_many(np.ascontiguousarray(rows)), dtype=np.float64)
    oracle = np.asarray(model.booster.predict(rows), dtype=np.float64)
    if not np.all(np.isfinite(compiled)) or np.any((compiled < 0) | (compiled > 1)):
        raise ModelRefusedError(
            "canary", f"{model.version}: scores outside [0, 1] on the canary batch"
        )
    worst = float(np.max(np.abs(compiled - oracle)))
    if worst > CANARY_TOLERANCE:
        raise ModelRefusedError(
            "canary",
            f"{model.version}: compiled library differs from LightGBM by {worst:.2e} on the "
            f"canary batch (limit {CANARY_TOLERANCE:g})",
        )


class ModelFollower:
    """Turns announcement messages into checked models, one load at a time."""

    def __init__(self, registry: ModelRegistry, alias: str | None, current: str) -> None:
        self.registry = registry
        self.alias = alias  # None: a pinned version is served; announcements are ignored
        self.current = current
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._pending: Future[SwapOutcome] | None = None
        self._wanted: ModelAnnouncement | None = None

    def offer(self, value: bytes | None, canary_rows: Callable[[], np.ndarray]) -> str:
        """Handle one ``model-updates`` message; returns what was done (for metrics/logs)."""
        if value is None:
            return "ignored"
        try:
            announcement = ModelAnnouncement.from_bytes(value)
        except BadAnnouncement as exc:
            log.warning("ignoring a bad model announcement: %s", exc)
            return "ignored"
        if self.alias is None or announcement.alias != self.alias:
            return "ignored"
        self._wanted = announcement  # the latest word on the alias, even "back to current"
        if announcement.version == self.current:
            return "ignored"
        if self._pending is None:
            rows = canary_rows()
            self._pending = self._pool.submit(self._load, announcement, rows)
        return "loading"

    def _load(self, announcement: ModelAnnouncement, rows: np.ndarray) -> SwapOutcome:
        try:
            manifest = self.registry.get(announcement.version)
            if manifest.digest() != announcement.manifest_digest:
                raise ModelRefusedError(
                    "integrity",
                    f"{announcement.version}: manifest digest {manifest.digest()} does not match "
                    f"the announced {announcement.manifest_digest}",
                )
            if list(manifest.feature_names) != list(catalog.FEATURE_NAMES):
                raise ModelRefusedError(
                    "schema", f"{announcement.version}: trained on another feature schema"
                )
            model = self.registry.load(announcement.version, allow_gtil=False)
            check_canary(model, rows)
            return SwapOutcome(announcement, model, None)
        except ModelRefusedError as exc:
            return SwapOutcome(announcement, None, exc)
        except ModelIntegrityError as exc:
            return SwapOutcome(announcement, None, ModelRefusedError("integrity", str(exc)))
        except (RegistryError, OSError, ValueError, RuntimeError) as exc:
            return SwapOutcome(announcement, None, ModelRefusedError("unknown", f"{exc}"))

    def ready(self, canary_rows: Callable[[], np.ndarray]) -> SwapOutcome | None:
        """A finished load, if any (call between batches). A newer announcement that arrived
        while loading starts its own load."""
        if self._pending is None or not self._pending.done():
            return None
        outcome = self._pending.result()
        self._pending = None
        wanted = self._wanted
        if wanted is not None and wanted.version != outcome.announcement.version:
            # superseded while loading (a newer promotion, or a rollback): never swap it in
            if wanted.version != self.current:
                self._pending = self._pool.submit(self._load, wanted, canary_rows())
            return None
        if outcome.model is not None:
            self.current = outcome.model.version
        return outcome

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
