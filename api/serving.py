"""The model the API replica has loaded: for ``GET /v1/models`` and ``/readyz``, hot-swapped.

The API does not score (decisions come from the stream, which holds the feature state); it loads
the served model anyway, with the same checks as a worker (every artifact's SHA-256, the compiled
library), so that ``/readyz`` means "this replica could serve this model" and ``/v1/models`` says
what is being served. It follows ``model-updates`` with :class:`scoring.model_swap.ModelFollower`
(digest, feature schema, canary: compiled library == LightGBM) and swaps when a load succeeds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np

from scoring.compiled import ModelIntegrityError
from scoring.model_swap import ModelFollower
from scoring.registry import LoadedModel, ModelManifest, ModelRegistry, RegistryError

log = logging.getLogger("fraudstream.api.models")
DESCRIBE_CACHE_S = 5.0
ALIASES = ("champion", "challenger")


class ModelService:
    def __init__(self, registry: ModelRegistry, ref: str, metrics: Any) -> None:
        self.registry = registry
        self.ref = ref
        self.metrics = metrics
        self.model: LoadedModel | None = None
        self.problem = "loading"
        self.follower: ModelFollower | None = None
        self._described: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load ``ref`` (blocking: run it on a thread). Without it, announcements still load one."""
        alias: str | None = self.ref
        try:
            model = self.registry.load(self.ref, allow_gtil=True)
            alias = self.ref if self.ref in self.registry.aliases() else None
            self._serve(model)
        except ModelIntegrityError as exc:
            self.metrics.integrity_failures.inc()
            self.problem = f"model {self.ref} refused: {exc}"
            log.error("%s", self.problem)
        except (RegistryError, OSError, ValueError, RuntimeError) as exc:
            self.problem = f"no model {self.ref!r} in {self.registry.storage.describe()}: {exc}"
            log.warning("%s; waiting for an announcement on model-updates", self.problem)
        current = self.model.version if self.model is not None else ""
        with self._lock:
            self.follower = ModelFollower(self.registry, alias, current)

    def _serve(self, model: LoadedModel) -> None:
        self.model = model
        self.problem = ""
        self._described = None
        self.metrics.serve_model(model.version)
        log.info("serving model %s", model.version)

    # Called from the Kafka consumer thread.
    def offer(self, value: bytes) -> None:
        with self._lock:
            if self.follower is not None:
                self.follower.offer(value, self._canary_rows)

    def poll(self) -> None:
        with self._lock:
            outcome = self.follower.ready(self._canary_rows) if self.follower else None
        if outcome is None:
            return
        if outcome.model is not None:
            self._serve(outcome.model)
        elif outcome.refused is not None:
            if outcome.refused.reason == "integrity":
                self.metrics.integrity_failures.inc()
            log.error(
                "model %s refused (%s): %s",
                outcome.announcement.version,
                outcome.refused.reason,
                outcome.refused,
            )

    def _canary_rows(self) -> np.ndarray:
        # The API computes no features: check_canary then scores one all-missing row.
        return np.empty((0, 0))

    def status(self) -> tuple[bool, str]:
        if self.model is None:
            return False, self.problem
        return True, f"model {self.model.version} loaded"

    def describe(self) -> dict[str, Any]:
        """Served, champion and challenger versions with window and metrics (cached a few s)."""
        cached = self._described
        if cached is not None and time.monotonic() - cached[0] < DESCRIBE_CACHE_S:
            return cached[1]
        out: dict[str, Any] = {
            "serving": _manifest(self.model.manifest) if self.model is not None else None
        }
        try:
            aliases = self.registry.aliases()
        except (RegistryError, OSError, ValueError) as exc:
            log.warning("cannot read the registry's aliases: %s", exc)
            aliases = {}
        for alias in ALIASES:
            state = aliases.get(alias)
            try:
                out[alias] = _manifest(self.registry.get(state.version)) if state else None
            except (RegistryError, OSError, ValueError) as exc:
                log.warning("cannot read %s (%s): %s", alias, state, exc)
                out[alias] = None
        self._described = (time.monotonic(), out)
        return out

    def close(self) -> None:
        with self._lock:
            if self.follower is not None:
                self.follower.close()


def _manifest(manifest: ModelManifest) -> dict[str, Any]:
    return {
        "version": manifest.version,
        "parent": manifest.parent,
        "created_at": manifest.created_at,
        "window": {"from": manifest.window.from_, "until": manifest.window.until},
        # JSON has no NaN or infinity: a metric that could not be computed is null.
        "metrics": {
            name: value if value is None or math.isfinite(value) else None
            for name, value in manifest.metrics.items()
        },
        "feature_schema_hash": manifest.feature_schema_hash,
    }
