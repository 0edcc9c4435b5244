"""Model registry: immutable versions, movable aliases, a SHA-256 for every artifact.

Layout of a local registry (``ModelRegistry(root)``)::

    root/
      versions/v0001-3f2a9c1b/     one directory per version, never rewritten
        manifest.json              ModelManifest (below)
        model.txt                  the LightGBM booster, as text
        model.so                   the compiled scorer (scoring.compiled)
      aliases/champion.json        where an alias points now, its rollback stack and its log
      .staging/                    versions being written (same filesystem: rename is atomic)
      .lock                        serialises writers across processes

A version is written completely under ``.staging`` and then renamed into ``versions/``; a reader
never sees half a version, and an existing version is never replaced. Aliases are small JSON files
replaced atomically (write temp file, fsync, rename). Versions are named ``v<seq>-<hash>``: the
sequence number sorts them, the first 8 hex digits of the booster's SHA-256 say what they hold.

Every artifact's digest is checked before it is used (:meth:`ModelRegistry.load`); a compiled
library whose digest does not match raises :class:`~scoring.compiled.ModelIntegrityError` and is
never loaded. A library built for another platform (or that the loader rejects) is rebuilt into a
local cache, or, without a compiler, the model is scored by treelite GTIL — with a log line.

Storage sits behind :class:`RegistryStorage` so an S3-compatible backend can replace the local
directory without touching the registry logic: :class:`scoring.registry_s3.S3Storage` keeps the same
layout under a bucket prefix. Services and CLI verbs open the registry the settings describe with
:func:`open_registry` (the bucket when ``settings.scoring.registry_s3`` is set, else the directory).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scoring.compiled import (
    DRIVER_ABI,
    CompiledModel,
    ModelCompileError,
    ModelIntegrityError,
    compile_model,
    compiler_identity,
    file_sha256,
    inspect_lightgbm_model,
    platform_identity,
)
from scoring.settings import DEFAULT_HOME, Settings

log = logging.getLogger(__name__)

__all__ = [
    "AliasState",
    "ArtifactRecord",
    "LoadedModel",
    "LocalStorage",
    "ModelManifest",
    "ModelRegistry",
    "RegistryError",
    "RegistryStorage",
    "TrainingWindow",
    "UnknownModelError",
    "VersionExistsError",
    "feature_schema_hash",
    "open_registry",
]

MODEL_TEXT = "model.txt"
MODEL_LIBRARY = "model.so"
MANIFEST = "manifest.json"
VERSIONS = "versions"
ALIASES = "aliases"

_VERSION_RE = re.compile(r"^v(\d{4,})-([0-9a-f]{8})$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: A ref that is never an alias: the newest version.
LATEST = "latest"


class RegistryError(Exception):
    """The registry cannot do what was asked (bad ref, nothing to roll back to, bad input)."""


class UnknownModelError(RegistryError, KeyError):
    """No version or alias by that name."""


class VersionExistsError(RegistryError, FileExistsError):
    """A version of that name exists already; versions are never overwritten."""


def feature_schema_hash(feature_names: Sequence[str]) -> str:
    """SHA-256 (hex) of the ordered feature names: models and feature vectors must agree on it.

    Order matters (it is the column order of the feature vector); names are used as given.
    """
    canonical = json.dumps({"features": list(feature_names)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


class ArtifactRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TrainingWindow(BaseModel):
    """The transactions the model was trained on: ``[from, until)``; either end may be open."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: datetime | None = Field(default=None, alias="from")
    until: datetime | None = None

    @field_validator("from_", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("window bounds need a timezone (use UTC)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TrainingWindow:
        if self.from_ is not None and self.until is not None and self.from_ >= self.until:
            raise ValueError("window 'from' must be before 'until'")
        return self


class BuildRecord(BaseModel):
    """How ``model.so`` was built (see :class:`scoring.compiled.BuildInfo`)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    compiler: str
    cflags: list[str]
    platform: dict[str, str]
    driver_abi: int = DRIVER_ABI
    units: int
    optimize: bool
    quantize: bool
    native: bool
    block_rows: int
    branch_free_max_splits: int
    rewrite: dict[str, int] = Field(default_factory=dict)
    build_seconds: float = 0.0


class ModelManifest(BaseModel):
    """Everything the registry knows about one version. Stored as ``manifest.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: int = 1
    version: str
    parent: str | None = None
    created_at: datetime
    window: TrainingWindow = TrainingWindow()
    feature_names: list[str]
    feature_schema_hash: str
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    artifacts: dict[str, ArtifactRecord]
    lightgbm_version: str
    treelite_version: str
    tl2cgen_version: str
    build: BuildRecord | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if not _VERSION_RE.match(self.version):
            raise ValueError(f"bad version name {self.version!r}")
        if feature_schema_hash(self.feature_names) != self.feature_schema_hash:
            raise ValueError("feature_schema_hash does not match feature_names")
        if MODEL_TEXT not in self.artifacts:
            raise ValueError(f"a version needs {MODEL_TEXT}")
        return self

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def from_json(cls, data: str | bytes) -> ModelManifest:
        return cls.model_validate_json(data)

    def digest(self) -> str:
        """SHA-256 of the canonical manifest: what a ``model-updates`` announcement carries."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class AliasEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str  # "promote" | "rollback"
    version: str
    previous: str | None
    at: datetime


class AliasState(BaseModel):
    """An alias: the version it points at, the stack ``rollback`` pops, and the full log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str
    version: str
    stack: list[str]
    log: list[AliasEvent]


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


class RegistryStorage(Protocol):
    """Where the registry's objects live. Keys are ``/``-separated paths relative to the root.

    The registry needs only these operations, so an S3-compatible store can implement them
    (conditional PUT for :meth:`publish`, a lock object or DynamoDB-style lease for :meth:`lock`).
    """

    def describe(self) -> str: ...

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (not recursive)."""
        ...

    def local_file(self, key: str, sha256: str | None = None) -> Path:
        """A local file with the object's bytes (the file itself, or a downloaded copy).

        ``sha256`` is the digest the manifest records for it: a backend that downloads may use it
        as its cache key. It is a hint, not a check: callers verify the file's digest themselves.
        """
        ...

    def publish(self, prefix: str, files: Mapping[str, Path]) -> None:
        """Create ``prefix/<name>`` for every file, all or nothing; ``VersionExistsError`` if
        ``prefix`` exists."""
        ...

    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace one small object in a single step (readers see old or new, never half)."""
        ...

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialise writers (register, promote, rollback) across processes."""
        ...


class LocalStorage:
    """A registry in a local (or network-mounted POSIX) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad key {key!r}")
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_children(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir())

    def local_file(self, key: str, sha256: str | None = None) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(path)
        return path

    def publish(self, prefix: str, files: Mapping[str, Path]) -> None:
        target = self._path(prefix)
        if target.exists():
            raise VersionExistsError(f"{target} exists; versions are immutable")
        staging_root = self.root / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="publish-", dir=staging_root))
        try:
            for name, source in files.items():
                dest = staging / name
                shutil.copyfile(source, dest)
                _fsync_file(dest)
                # Read-only: a version's files are not edited in place (by people or tools).
                dest.chmod(0o444)
            _fsync_dir(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            # rename(2) of a directory refuses a non-empty target; the check above covers an
            # absent one, and the writer lock covers races between registrars.
            try:
                os.rename(staging, target)
            except OSError as exc:
                raise VersionExistsError(f"{target} exists; versions are immutable") from exc
            _fsync_dir(target.parent)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def write_atomic(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A verified version, ready to score: the LightGBM booster (for reasons) and the scorer."""

    manifest: ModelManifest
    booster: lgb.Booster
    scorer: CompiledModel

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def feature_names(self) -> list[str]:
        return self.manifest.feature_names

    def score_many(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.scorer.score_many(X)

    def score_one(self, x: npt.ArrayLike) -> float:
        return self.scorer.score_one(x)


WindowLike = TrainingWindow | tuple[datetime | None, datetime | None] | Mapping[str, Any] | None


class ModelRegistry:
    """Immutable model versions with movable aliases (``champion``, ``challenger``)."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        storage: RegistryStorage | None = None,
        cache_dir: str | Path | None = None,
        compile_options: Mapping[str, Any] | None = None,
    ) -> None:
        if storage is None:
            if root is None:
                raise ValueError("give a root directory or a storage backend")
            storage = LocalStorage(root)
        self.storage = storage
        # Rebuilt libraries go to a local cache, never into the (immutable) version.
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_HOME / "compiled"
        self.compile_options: dict[str, Any] = dict(compile_options or {})

    def __repr__(self) -> str:
        return f"ModelRegistry({self.storage.describe()!r})"

    # ---- writing ------------------------------------------------------------------------

    def register(
        self,
        booster: lgb.Booster | str | Path,
        *,
        feature_names: Sequence[str],
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        window: WindowLike = None,
        parent: str | None = None,
        version: str | None = None,
        require_compiled: bool = True,
    ) -> ModelManifest:
        """Store a new immutable version (booster text + compiled library + manifest).

        ``booster`` is a ``lightgbm.Booster`` or the path of a model text file. The library is
        compiled here, so a version that registers is one that scores. ``version`` forces a name
        (e.g. when copying between registries); an existing name raises
        :class:`VersionExistsError`. Without a working compiler, ``require_compiled=False``
        registers the booster alone (served by GTIL until a host can compile it).
        """
        feature_names = list(feature_names)
        parent_version = self.resolve(parent) if parent else None
        train_window = _as_window(window)
        params_dict = json.loads(json.dumps(dict(params or {}), default=str))
        # A metric can be undefined (AP without positives): stored as null, not as NaN.
        metrics_dict = {
            str(k): (float(v) if v is not None and math.isfinite(float(v)) else None)
            for k, v in (metrics or {}).items()
        }

        with tempfile.TemporaryDirectory(prefix="fraud-register-") as tmp:
            work = Path(tmp)
            text_path = work / MODEL_TEXT
            if isinstance(booster, lgb.Booster):
                text_path.write_text(booster.model_to_string())
            else:
                shutil.copyfile(booster, text_path)
            info = inspect_lightgbm_model(text_path.read_text())
            if info.num_features != len(feature_names):
                raise RegistryError(
                    f"booster has {info.num_features} features, {len(feature_names)} names given"
                )
            if not all(n.startswith("Column_") for n in info.feature_names) and list(
                info.feature_names
            ) != _lightgbm_names(feature_names):
                raise RegistryError(
                    "feature_names differ from the names stored in the booster: "
                    f"{list(info.feature_names)[:5]}… vs {feature_names[:5]}…"
                )
            files = {MODEL_TEXT: text_path}
            build = None
            try:
                build_info = compile_model(text_path, work / MODEL_LIBRARY, **self.compile_options)
            except ModelCompileError:
                if require_compiled:
                    raise
                log.warning("registering without a compiled library (GTIL will score it)")
            else:
                files[MODEL_LIBRARY] = work / MODEL_LIBRARY
                build_data = build_info.to_dict()
                build = BuildRecord.model_validate(
                    {
                        k: v
                        for k, v in build_data.items()
                        if k not in {"lib_sha256", "num_features", "num_trees"}
                        and not k.endswith("_version")
                    }
                )
            artifacts = {
                name: ArtifactRecord(sha256=file_sha256(path), size=path.stat().st_size)
                for name, path in files.items()
            }
            import tl2cgen  # deferred like in scoring.compiled: ~0.3 s, only writers need it
            import treelite

            with self.storage.lock():
                name = version or self._next_version(artifacts[MODEL_TEXT].sha256)
                if name in self._version_names():
                    raise VersionExistsError(f"version {name} exists; versions are immutable")
                manifest = ModelManifest(
                    version=name,
                    parent=parent_version,
                    created_at=datetime.now(UTC),
                    window=train_window,
                    feature_names=feature_names,
                    feature_schema_hash=feature_schema_hash(feature_names),
                    params=params_dict,
                    metrics=metrics_dict,
                    artifacts=artifacts,
                    lightgbm_version=lgb.__version__,
                    treelite_version=treelite.__version__,
                    tl2cgen_version=tl2cgen.__version__,
                    build=build,
                )
                (work / MANIFEST).write_text(manifest.to_json())
                self.storage.publish(f"{VERSIONS}/{name}", {**files, MANIFEST: work / MANIFEST})
        log.info("registered model %s (%d trees)", name, info.num_trees)
        return manifest

    def promote(self, ref: str, alias: str = "champion") -> AliasState:
        """Point ``alias`` at the version ``ref`` names (a version, an alias or ``latest``)."""
        _check_alias(alias)
        with self.storage.lock():
            version = self.resolve(ref)
            state = self._alias_state(alias)
            previous = state.version if state else None
            stack = [*(state.stack if state else []), version]
            events = [*(state.log if state else [])]
            events.append(
                AliasEvent(action="promote", version=version, previous=previous, at=_now())
            )
            new = AliasState(alias=alias, version=version, stack=stack, log=events)
            self._write_alias(new)
        log.info("alias %s -> %s (was %s)", alias, version, previous)
        return new

    def rollback(self, alias: str = "champion") -> str:
        """Point ``alias`` back at the version it pointed at before; returns that version.

        Repeated rollbacks walk further back through earlier promotions.
        """
        _check_alias(alias)
        with self.storage.lock():
            state = self._alias_state(alias)
            if state is None or len(state.stack) < 2:
                raise RegistryError(f"alias {alias!r} has no earlier version to roll back to")
            stack = state.stack[:-1]
            version = stack[-1]
            event = AliasEvent(
                action="rollback", version=version, previous=state.version, at=_now()
            )
            self._write_alias(
                AliasState(alias=alias, version=version, stack=stack, log=[*state.log, event])
            )
        log.warning("alias %s rolled back %s -> %s", alias, state.version, version)
        return version

    # ---- reading ------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """The version a ref names: a version (``v0003-…`` or just ``v0003``), an alias or
        ``latest``."""
        names = self._version_names()
        if ref == LATEST:
            if not names:
                raise UnknownModelError("the registry has no versions")
            return names[-1]
        if ref in names:
            return ref
        if _ALIAS_RE.match(ref) and not re.match(r"^v\d+$", ref):
            state = self._alias_state(ref)
            if state is None:
                raise UnknownModelError(f"no alias or version {ref!r}")
            return state.version
        matches = [n for n in names if n.split("-", 1)[0] == ref]
        if len(matches) == 1:
            return matches[0]
        raise UnknownModelError(f"no version {ref!r}")

    def get(self, ref: str) -> ModelManifest:
        """The manifest of the version ``ref`` names."""
        version = self.resolve(ref)
        return ModelManifest.from_json(self.storage.read_bytes(f"{VERSIONS}/{version}/{MANIFEST}"))

    def list(self) -> builtins.list[ModelManifest]:
        """Every version, oldest first."""
        return [self.get(v) for v in self._version_names()]

    def aliases(self) -> dict[str, AliasState]:
        """Every alias and its state."""
        out = {}
        for name in self.storage.list_children(ALIASES):
            if name.endswith(".json") and (state := self._alias_state(name[:-5])):
                out[state.alias] = state
        return out

    def verify(self, ref: str) -> ModelManifest:
        """Check every artifact of a version against its manifest (no loading)."""
        manifest = self.get(ref)
        for name, record in manifest.artifacts.items():
            data = self.storage.read_bytes(f"{VERSIONS}/{manifest.version}/{name}")
            actual = hashlib.sha256(data).hexdigest()
            if actual != record.sha256:
                raise ModelIntegrityError(
                    f"{manifest.version}/{name}: SHA-256 {actual}, manifest says {record.sha256}"
                )
        return manifest

    def load(self, ref: str = "champion", *, allow_gtil: bool = True) -> LoadedModel:
        """Verify and load a version: the booster and the compiled scorer.

        Every artifact's digest is checked before use; a mismatch raises
        :class:`~scoring.compiled.ModelIntegrityError` (the caller keeps serving its current
        model). A library built for another platform, or one the loader rejects, is rebuilt into
        the cache; without a compiler GTIL scores (``scorer.engine == "gtil"``) unless
        ``allow_gtil`` is false.
        """
        manifest = self.get(ref)
        prefix = f"{VERSIONS}/{manifest.version}"
        text_record = manifest.artifacts[MODEL_TEXT]
        text_bytes = self.storage.read_bytes(f"{prefix}/{MODEL_TEXT}")
        actual = hashlib.sha256(text_bytes).hexdigest()
        if actual != text_record.sha256:
            raise ModelIntegrityError(
                f"{prefix}/{MODEL_TEXT}: SHA-256 {actual}, manifest says {text_record.sha256}"
            )
        booster = lgb.Booster(model_str=text_bytes.decode())
        model_file = self.storage.local_file(f"{prefix}/{MODEL_TEXT}", text_record.sha256)
        scorer = self._load_scorer(manifest, prefix, model_file, allow_gtil=allow_gtil)
        return LoadedModel(manifest=manifest, booster=booster, scorer=scorer)

    # ---- internals ----------------------------------------------------------------------

    def _load_scorer(
        self, manifest: ModelManifest, prefix: str, model_file: Path, *, allow_gtil: bool
    ) -> CompiledModel:
        text_sha = manifest.artifacts[MODEL_TEXT].sha256
        lib_record = manifest.artifacts.get(MODEL_LIBRARY)
        reason = "no compiled library in this version"
        if lib_record is not None and manifest.build is not None:
            mismatch = _platform_mismatch(manifest.build)
            if mismatch is None:
                lib_file = self.storage.local_file(f"{prefix}/{MODEL_LIBRARY}", lib_record.sha256)
                try:
                    # A digest mismatch raises here and is not caught: tampering is fatal.
                    return CompiledModel.load(
                        lib_file,
                        expected_sha256=lib_record.sha256,
                        num_features=manifest.num_features,
                        model_path=model_file,
                        model_sha256=text_sha,
                        fallback=False,
                    )
                except (OSError, AttributeError) as exc:
                    reason = f"the stored library does not load ({exc})"
            else:
                reason = mismatch
        try:
            return self._cached_build(manifest, model_file, reason=reason)
        except ModelCompileError as exc:
            if not allow_gtil:
                raise
            log.warning(
                "model %s: %s and it cannot be rebuilt (%s); scoring with treelite GTIL",
                manifest.version,
                reason,
                exc,
            )
            return CompiledModel.from_gtil(
                model_file, num_features=manifest.num_features, expected_sha256=text_sha
            )

    def _cached_build(
        self, manifest: ModelManifest, model_file: Path, *, reason: str
    ) -> CompiledModel:
        """Build (or reuse) a library for this host in the local cache."""
        text_sha = manifest.artifacts[MODEL_TEXT].sha256
        options = dict(self.compile_options)
        options.pop("native", None)  # a rebuild is for this host, but stays portable
        key_material = json.dumps(
            {
                "model": text_sha,
                "platform": platform_identity(),
                "compiler": compiler_identity(options.get("cc", "gcc")),
                "abi": DRIVER_ABI,
                "options": options,
            },
            sort_keys=True,
        )
        key = hashlib.sha256(key_material.encode()).hexdigest()[:32]
        entry = self.cache_dir / key
        lib_path, meta_path = entry / MODEL_LIBRARY, entry / "build.json"
        if meta_path.is_file() and lib_path.is_file():
            meta = json.loads(meta_path.read_text())
            log.info("model %s: %s; using the cached rebuild %s", manifest.version, reason, entry)
        else:
            log.warning("model %s: %s; rebuilding into %s", manifest.version, reason, entry)
            entry.mkdir(parents=True, exist_ok=True)
            tmp_lib = entry / f".{uuid.uuid4().hex}.so"
            info = compile_model(model_file, tmp_lib, **options)
            os.replace(tmp_lib, lib_path)
            meta = {"lib_sha256": info.lib_sha256, "model_sha256": text_sha}
            tmp_meta = entry / f".{uuid.uuid4().hex}.json"
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_meta, meta_path)
        return CompiledModel.load(
            lib_path,
            expected_sha256=meta["lib_sha256"],
            num_features=manifest.num_features,
            model_path=model_file,
            model_sha256=text_sha,
            fallback=False,
        )

    def _version_names(self) -> builtins.list[str]:
        names = [n for n in self.storage.list_children(VERSIONS) if _VERSION_RE.match(n)]
        return sorted(names, key=lambda n: int(n[1:].split("-", 1)[0]))

    def _next_version(self, model_sha256: str) -> str:
        names = self._version_names()
        seq = int(names[-1][1:].split("-", 1)[0]) + 1 if names else 1
        return f"v{seq:04d}-{model_sha256[:8]}"

    def _alias_state(self, alias: str) -> AliasState | None:
        try:
            data = self.storage.read_bytes(f"{ALIASES}/{alias}.json")
        except FileNotFoundError:
            return None
        return AliasState.model_validate_json(data)

    def _write_alias(self, state: AliasState) -> None:
        self.storage.write_atomic(
            f"{ALIASES}/{state.alias}.json", state.model_dump_json(indent=2).encode()
        )


def open_registry(
    settings: Settings,
    root: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    compile_options: Mapping[str, Any] | None = None,
) -> ModelRegistry:
    """The registry the settings describe; what every service and CLI verb opens.

    ``settings.scoring.registry_s3`` set: the bucket (:class:`scoring.registry_s3.S3Storage`), with
    ``root`` (default ``settings.scoring.registry``) as the local cache of downloaded artifacts.
    Otherwise the directory ``root`` (default ``settings.scoring.registry``).
    """
    local = Path(root) if root is not None else settings.scoring.registry
    storage: RegistryStorage
    if settings.scoring.registry_s3 is not None:
        from scoring.registry_s3 import S3Storage  # boto3 only when a bucket is configured

        storage = S3Storage.from_settings(settings.scoring.registry_s3, cache_dir=local)
    else:
        storage = LocalStorage(local)
    return ModelRegistry(storage=storage, cache_dir=cache_dir, compile_options=compile_options)


def _as_window(window: WindowLike) -> TrainingWindow:
    if window is None:
        return TrainingWindow()
    if isinstance(window, TrainingWindow):
        return window
    if isinstance(window, tuple):
        start, until = window
        return TrainingWindow.model_validate({"from": start, "until": until})
    return TrainingWindow.model_validate(dict(window))


def _lightgbm_names(names: Sequence[str]) -> list[str]:
    # LightGBM replaces spaces in feature names when it stores them.
    return [n.replace(" ", "_") for n in names]


def _check_alias(alias: str) -> None:
    if not _ALIAS_RE.match(alias) or alias == LATEST or re.match(r"^v\d+", alias):
        raise RegistryError(f"bad alias name {alias!r}")


def _now() -> datetime:
    return datetime.now(UTC)


def _platform_mismatch(build: BuildRecord) -> str | None:
    """Why a library built as ``build`` must not be loaded on this host (None: it may)."""
    here = platform_identity(native=build.native)
    for key in ("system", "machine"):
        if build.platform.get(key) != here.get(key):
            return f"built for {key}={build.platform.get(key)}, this host is {here.get(key)}"
    if build.native and build.platform.get("cpu_flags_sha256") != here.get("cpu_flags_sha256"):
        # -march=native code may use instructions this CPU lacks: SIGILL, not an exception.
        return "built with -march=native on a CPU with other features"
    built_libc, host_libc = build.platform.get("libc", ""), here.get("libc", "")
    if built_libc != host_libc and _libc_version(built_libc) > _libc_version(host_libc):
        return f"built against {built_libc}, this host has {host_libc}"
    if build.driver_abi != DRIVER_ABI:
        return f"driver ABI {build.driver_abi}, this runtime speaks {DRIVER_ABI}"
    return None


def _libc_version(libc: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", libc)
    return tuple(int(n) for n in numbers) if numbers else (0,)
