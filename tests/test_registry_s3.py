"""The model registry in an S3 bucket (scoring/registry_s3.py), against a real MinIO server.

MinIO comes from scripts/ensure-minio (pinned; built with ``go install`` on first use, then cached
in .cache/bin; `make test` builds it before pytest runs). One server per session, on a free port in
a temp dir; every test gets its own key prefix. The tests skip only when the binary cannot be built
because Go is not installed (outside CI); a build that fails with Go present fails the session.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from scoring.compiled import ModelIntegrityError, file_sha256
from scoring.registry import (
    ModelRegistry,
    RegistryError,
    UnknownModelError,
    VersionExistsError,
    open_registry,
)
from scoring.registry_s3 import S3Storage
from scoring.settings import S3Settings, ScoringSettings, Settings
from tests.conftest import free_ports

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(__file__).parent / "models"
SINGLE_TREE = MODELS_DIR / "single_tree.txt"  # 4 features, Column_0..3
FEATURES = ["amount", "card_tx_count_1h", "seconds_since_prev", "merchant_fraud_rate"]
ENSURE_MINIO_TIMEOUT = 1800  # seconds: the first `go install` of MinIO took ~10 min on 2 cores
BUCKET = "fraudstream-test"
ACCESS_KEY, SECRET_KEY = "fraudstream", "fraudstream-secret"


@dataclass(frozen=True)
class Minio:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


def minio_binary() -> Path:
    """MinIO from scripts/ensure-minio; skip only when it cannot be built for want of Go."""
    if shutil.which("go") is None:
        cached = Path(os.environ.get("FRAUD_TOOLS_BIN", REPO / ".cache" / "bin")) / "minio"
        if cached.is_file():
            return cached  # built earlier (its pin cannot be checked without Go)
        if os.environ.get("CI"):
            pytest.fail("MinIO cannot be built: Go is not on PATH (CI must have Go 1.24+)")
        pytest.skip("MinIO cannot be built: Go is not on PATH (install Go 1.24+; CI has it)")
    try:
        proc = subprocess.run(
            [str(REPO / "scripts" / "ensure-minio")],
            capture_output=True,
            text=True,
            timeout=ENSURE_MINIO_TIMEOUT,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/ensure-minio did not finish within {ENSURE_MINIO_TIMEOUT} s")
    if proc.returncode != 0:
        pytest.fail(
            f"cannot get MinIO: scripts/ensure-minio exited {proc.returncode}\n{proc.stderr}",
            pytrace=False,
        )
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "minio"
    assert binary.is_file(), f"scripts/ensure-minio printed {proc.stdout!r} but {binary} is missing"
    return binary


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Minio]:
    binary = minio_binary()
    root = tmp_path_factory.mktemp("minio")
    port, console_port = free_ports(2)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": ACCESS_KEY,
        "MINIO_ROOT_PASSWORD": SECRET_KEY,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "HOME": str(root),
    }
    log = root / "minio.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [str(binary), "server", str(root / "data"), "--quiet",
             "--address", f"127.0.0.1:{port}", "--console-address", f"127.0.0.1:{console_port}"],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Minio(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"minio exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{server.endpoint}/minio/health/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"minio not ready:\n{log.read_text()}"
                time.sleep(0.2)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/registry"


def s3_settings(minio: Minio, prefix: str, **extra: Any) -> Settings:
    s3 = S3Settings.model_validate(
        {
            "bucket": BUCKET,
            "prefix": prefix,
            "endpoint_url": minio.endpoint,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            **extra,
        }
    )
    return Settings(scoring=ScoringSettings(registry_s3=s3))


@pytest.fixture
def open_s3(minio: Minio, prefix: str, tmp_path: Path) -> Callable[..., ModelRegistry]:
    """``open_s3(cache="cache", **storage_options)``: a registry on this test's prefix, opened
    like the services do (open_registry), with its own local cache directory."""

    def make(cache: str = "cache", **options: Any) -> ModelRegistry:
        registry = open_registry(
            s3_settings(minio, prefix), tmp_path / cache, cache_dir=tmp_path / f"{cache}-builds"
        )
        for name, value in options.items():
            setattr(registry.storage, name, value)
        return registry

    return make


@pytest.fixture
def registry(open_s3: Callable[..., ModelRegistry]) -> ModelRegistry:
    return open_s3()


def register(registry: ModelRegistry, **overrides: Any) -> str:
    kwargs: dict[str, Any] = {"feature_names": FEATURES, "metrics": {"auc": 0.9}}
    kwargs.update(overrides)
    return registry.register(SINGLE_TREE, **kwargs).version


def keys(minio: Minio, prefix: str) -> list[str]:
    listing = minio.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1 :] for o in listing.get("Contents", []))


def lock_state(minio: Minio, prefix: str) -> Any:
    body = minio.client().get_object(Bucket=BUCKET, Key=f"{prefix}/.lock")["Body"].read()
    return json.loads(body)


def flip_a_byte(minio: Minio, key: str) -> None:
    client = minio.client()
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))  # the bucket's owner can


def rows(n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


# ------------------------------------------------------------------------ settings and factory


def test_settings_from_the_chart_env_open_the_bucket(
    minio: Minio, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    env = {  # what deploy/helm/fraudstream sets with registry.type=s3
        "FRAUD_SCORING__REGISTRY": str(tmp_path / "cache"),
        "FRAUD_SCORING__REGISTRY_S3__BUCKET": BUCKET,
        "FRAUD_SCORING__REGISTRY_S3__PREFIX": "/env/registry/",
        "FRAUD_SCORING__REGISTRY_S3__ENDPOINT_URL": minio.endpoint,
        "FRAUD_SCORING__REGISTRY_S3__REGION": "us-east-1",
        "FRAUD_SCORING__REGISTRY_S3__ACCESS_KEY_ID": ACCESS_KEY,
        "FRAUD_SCORING__REGISTRY_S3__SECRET_ACCESS_KEY": SECRET_KEY,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.scoring.registry_s3 is not None
    assert SECRET_KEY not in repr(settings)
    registry = open_registry(settings)
    assert isinstance(registry.storage, S3Storage)
    assert registry.storage.describe() == f"s3://{BUCKET}/env/registry at {minio.endpoint}"
    assert registry.storage.cache_dir == tmp_path / "cache"
    assert registry.list() == []
    monkeypatch.delenv("FRAUD_SCORING__REGISTRY_S3__BUCKET")
    with pytest.raises(ValueError, match="bucket"):
        Settings()  # the other variables alone are a mistake, not a local registry
    for key in env:
        monkeypatch.delenv(key, raising=False)
    assert not isinstance(open_registry(Settings(), tmp_path / "local").storage, S3Storage)


# ---------------------------------------------------------------------------------- versions


def test_register_and_load_from_the_bucket(
    registry: ModelRegistry, minio: Minio, prefix: str, tmp_path: Path
) -> None:
    version = register(registry)
    assert version.startswith("v0001-")
    assert keys(minio, prefix) == [
        ".lock",
        f"versions/{version}/manifest.json",
        f"versions/{version}/model.so",
        f"versions/{version}/model.txt",
    ]  # no .incomplete marker left
    assert lock_state(minio, prefix) == {"owner": None}  # released
    manifest = registry.get(version)
    registry.promote(version)
    loaded = registry.load()
    assert loaded.version == version and loaded.scorer.engine == "tl2cgen"
    X = rows()
    expected = lgb.Booster(model_file=str(SINGLE_TREE)).predict(X, num_threads=1)
    np.testing.assert_allclose(loaded.score_many(X), expected, rtol=0, atol=1e-12)
    # the library was loaded from the content-addressed cache, named by the manifest's digest
    lib_sha = manifest.artifacts["model.so"].sha256
    assert (tmp_path / "cache" / "s3-objects" / lib_sha / "model.so").is_file()
    assert registry.verify("champion").version == version
    # another process (a fresh cache) reads the same registry
    other = ModelRegistry(
        storage=S3Storage.from_settings(
            s3_settings(minio, prefix).scoring.registry_s3,  # type: ignore[arg-type]
            cache_dir=tmp_path / "other-cache",
        ),
        cache_dir=tmp_path / "other-builds",
    )
    assert [m.version for m in other.list()] == [version]
    assert other.load("champion").score_one(X[0]) == pytest.approx(expected[0], abs=1e-12)


def test_versions_are_immutable_and_numbered_in_order(
    registry: ModelRegistry, minio: Minio, prefix: str
) -> None:
    v1 = register(registry)
    v2 = register(registry)
    assert (v1[:5], v2[:5]) == ("v0001", "v0002")
    with pytest.raises(VersionExistsError):
        register(registry, version=v1)
    # the server itself refuses to overwrite a version's object (If-None-Match on every PUT)
    storage = registry.storage
    assert isinstance(storage, S3Storage)
    with pytest.raises(Exception, match=r"PreconditionFailed|412"):
        storage.client.put_object(
            Bucket=BUCKET, Key=f"{prefix}/versions/{v1}/model.txt", Body=b"x", IfNoneMatch="*"
        )
    assert [m.version for m in registry.list()] == [v1, v2]


def test_a_version_being_published_is_invisible_until_complete(
    registry: ModelRegistry, minio: Minio, prefix: str
) -> None:
    v1 = register(registry)
    client = minio.client()
    half = "v0002-deadbeef"
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/versions/{half}/.incomplete", Body=b"")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/versions/{half}/model.txt", Body=b"tree")
    assert [m.version for m in registry.list()] == [v1]
    assert registry.resolve("latest") == v1
    with pytest.raises(UnknownModelError):
        registry.get(half)
    # the publisher is alive (its marker is fresh): the name is taken
    with pytest.raises(VersionExistsError, match="being published"):
        register(registry, version=half)


def test_an_abandoned_publication_is_replaced(
    open_s3: Callable[..., ModelRegistry], minio: Minio, prefix: str, caplog: Any
) -> None:
    registry = open_s3(lock_ttl_s=1.0)
    client = minio.client()
    name = "v0001-0badf00d"
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/versions/{name}/.incomplete", Body=b"")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/versions/{name}/junk", Body=b"partial")
    time.sleep(2.1)  # the marker is older than the lease: its writer is gone
    with caplog.at_level(logging.WARNING, logger="scoring.registry_s3"):
        assert register(registry, version=name) == name
    assert "abandoned" in caplog.text
    assert keys(minio, prefix) == [
        ".lock",
        f"versions/{name}/manifest.json",
        f"versions/{name}/model.so",
        f"versions/{name}/model.txt",
    ]
    assert registry.load(name).version == name


# ----------------------------------------------------------------------------------- aliases


def test_promote_and_rollback(registry: ModelRegistry, minio: Minio, prefix: str) -> None:
    v1, v2, v3 = (register(registry) for _ in range(3))
    registry.promote(v1)
    registry.promote(v2)
    registry.promote(v3, alias="challenger")
    assert registry.resolve("champion") == v2
    assert registry.get("challenger").version == v3
    assert registry.rollback() == v1
    assert registry.resolve("champion") == v1
    assert registry.resolve("challenger") == v3
    with pytest.raises(RegistryError, match="roll back"):
        registry.rollback()
    state = registry.aliases()["champion"]
    assert [(e.action, e.version, e.previous) for e in state.log] == [
        ("promote", v1, None),
        ("promote", v2, v1),
        ("rollback", v1, v2),
    ]
    stored = json.loads(
        minio.client()
        .get_object(Bucket=BUCKET, Key=f"{prefix}/aliases/champion.json")["Body"]
        .read()
    )
    assert stored["version"] == v1
    assert sorted(registry.aliases()) == ["challenger", "champion"]


def test_concurrent_promotions_do_not_lose_an_update(
    open_s3: Callable[..., ModelRegistry],
) -> None:
    """Six writers (own clients, own leases, as in six pods) promote at once, four times each:
    every promotion is in the alias's log and stack, each one's `previous` the one before."""
    first = open_s3("c0")
    versions = [register(first) for _ in range(2)]
    writers = [open_s3(f"c{i}") for i in range(6)]
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def work(i: int, registry: ModelRegistry) -> None:
        try:
            start.wait()
            for n in range(4):
                registry.promote(versions[(i + n) % 2])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, w)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    state = first.aliases()["champion"]
    assert len(state.log) == len(state.stack) == 24
    chain = [e.previous for e in state.log[1:]]
    assert chain == [e.version for e in state.log[:-1]], "an update was lost or reordered"
    assert state.stack == [e.version for e in state.log]


def test_a_lock_is_exclusive_and_a_dead_holders_lease_is_taken_over(
    open_s3: Callable[..., ModelRegistry], minio: Minio, prefix: str, caplog: Any
) -> None:
    registry = open_s3(lock_ttl_s=1.5, lock_timeout_s=0.5)
    v1 = register(registry)
    client = minio.client()
    # a writer holds the lease and keeps renewing it: others wait, then give up
    holder = open_s3("holder", lock_ttl_s=1.5)
    with holder.storage.lock():
        with pytest.raises(RegistryError, match="still held"):
            registry.promote(v1)
        time.sleep(2.0)  # longer than the TTL: only the holder's renewals keep it
        with pytest.raises(RegistryError, match="still held"):
            registry.promote(v1)
    assert lock_state(minio, prefix) == {"owner": None}  # released
    # a writer that died holding the lease: taken over once the lease is older than its TTL
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/.lock", Body=b'{"owner": "dead"}')
    registry.storage.lock_timeout_s = 10.0  # type: ignore[attr-defined]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="scoring.registry_s3"):
        registry.promote(v1)
    assert 1.0 <= time.monotonic() - started < 8.0
    assert "took over the registry lock" in caplog.text
    assert registry.resolve("champion") == v1


def test_a_writer_that_lost_its_lease_writes_nothing(
    registry: ModelRegistry, minio: Minio, prefix: str
) -> None:
    v1 = register(registry)
    registry.promote(v1)
    v2 = register(registry)
    with pytest.raises(RegistryError, match="lost the registry lock"), registry.storage.lock():
        # another writer took the lease over (this one was paused past its TTL)
        minio.client().put_object(Bucket=BUCKET, Key=f"{prefix}/.lock", Body=b'{"owner": "b"}')
        registry._write_alias(  # what promote() writes under the lock
            registry.aliases()["champion"].model_copy(update={"version": v2})
        )
    assert registry.resolve("champion") == v1


class IgnoresConditions:
    """A client for a server that ignores If-None-Match / If-Match (as some S3 clones do)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_object(self, **kwargs: Any) -> Any:
        kwargs.pop("IfNoneMatch", None)
        kwargs.pop("IfMatch", None)
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_server_without_conditional_writes_is_refused_for_writing(
    registry: ModelRegistry,
) -> None:
    v1 = register(registry)
    registry.promote(v1)
    storage = registry.storage
    assert isinstance(storage, S3Storage)
    blind = open_registry_like(registry)
    blind.storage.client = IgnoresConditions(storage.client)  # type: ignore[attr-defined]
    with pytest.raises(RegistryError, match="ignores conditional writes"):
        blind.promote(v1)
    assert blind.resolve("champion") == v1  # reading works
    assert registry.promote(v1).version == v1  # and the lease was left free


def open_registry_like(registry: ModelRegistry) -> ModelRegistry:
    storage = registry.storage
    assert isinstance(storage, S3Storage)
    twin = S3Storage(
        storage.bucket, storage.prefix, cache_dir=storage.cache_dir, client=storage.client
    )
    return ModelRegistry(storage=twin, cache_dir=registry.cache_dir)


# ----------------------------------------------------------------------------------- digests


def test_a_tampered_library_in_the_bucket_is_refused(
    registry: ModelRegistry, minio: Minio, prefix: str
) -> None:
    version = register(registry)
    flip_a_byte(minio, f"{prefix}/versions/{version}/model.so")
    with pytest.raises(ModelIntegrityError):
        registry.load(version)
    with pytest.raises(ModelIntegrityError):
        registry.verify(version)


def test_a_tampered_booster_in_the_bucket_is_refused(
    registry: ModelRegistry, minio: Minio, prefix: str
) -> None:
    version = register(registry)
    key = f"{prefix}/versions/{version}/model.txt"
    client = minio.client()
    text = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    client.put_object(Bucket=BUCKET, Key=key, Body=text.replace("shrinkage=1", "shrinkage=2"))
    with pytest.raises(ModelIntegrityError):
        registry.load(version)


def test_tampering_after_a_load_is_refused_despite_the_cache(
    registry: ModelRegistry, minio: Minio, prefix: str, tmp_path: Path
) -> None:
    version = register(registry)
    key = f"{prefix}/versions/{version}/model.so"
    client = minio.client()
    good = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert registry.load(version).scorer.engine == "tl2cgen"  # the cache now holds the library
    flip_a_byte(minio, key)
    with pytest.raises(ModelIntegrityError):
        registry.load(version)
    client.put_object(Bucket=BUCKET, Key=key, Body=good)
    # a damaged cache entry is not trusted either: it is downloaded again
    lib_sha = registry.get(version).artifacts["model.so"].sha256
    cached = tmp_path / "cache" / "s3-objects" / lib_sha / "model.so"
    cached.chmod(0o644)
    cached.write_bytes(b"garbage")
    assert registry.load(version).scorer.engine == "tl2cgen"
    assert file_sha256(cached) == lib_sha


# --------------------------------------------------------------------------------------- CLI


def test_cli_verbs_use_the_bucket(minio: Minio, prefix: str, registry: ModelRegistry) -> None:
    v1 = register(registry)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")},
        "FRAUD_SCORING__REGISTRY_S3__BUCKET": BUCKET,
        "FRAUD_SCORING__REGISTRY_S3__PREFIX": prefix,
        "FRAUD_SCORING__REGISTRY_S3__ENDPOINT_URL": minio.endpoint,
        "FRAUD_SCORING__REGISTRY_S3__ACCESS_KEY_ID": ACCESS_KEY,
        "FRAUD_SCORING__REGISTRY_S3__SECRET_ACCESS_KEY": SECRET_KEY,
        "FRAUD_SCORING__REGISTRY_S3__REGION": "us-east-1",
        "COLUMNS": "200",
    }
    promote = subprocess.run(
        [sys.executable, "-m", "fraudstream", "models", "promote", v1, "--no-announce"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert promote.returncode == 0, promote.stderr
    assert registry.resolve("champion") == v1
    listing = subprocess.run(
        [sys.executable, "-m", "fraudstream", "models", "list"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert f"s3://{BUCKET}/{prefix}" in listing.stdout + listing.stderr
    assert v1 in listing.stdout and "champion" in listing.stdout
