"""The model registry in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).

:class:`S3Storage` implements :class:`scoring.registry.RegistryStorage` with the layout of a local
registry under ``s3://<bucket>/<prefix>/``::

    <prefix>/versions/v0001-3f2a9c1b/manifest.json   one "folder" per version, never rewritten
    <prefix>/versions/v0001-3f2a9c1b/model.txt
    <prefix>/versions/v0001-3f2a9c1b/model.so
    <prefix>/versions/v0002-.../.incomplete          only while v0002 is being published
    <prefix>/aliases/champion.json                   replaced by one PUT (atomic per object)
    <prefix>/.lock                                   the writers' lease ({"owner": null}: free)

How the local semantics carry over:

* **Immutable versions.** Every object of a version is written with ``If-None-Match: *``: the
  server refuses to replace an existing object, whoever asks.
* **A reader never sees half a version.** S3 cannot rename a folder, so :meth:`S3Storage.publish`
  first writes ``<version>/.incomplete``, then the files (the manifest last), then deletes the
  marker; listings hide every folder that holds the marker. A publisher that died mid-way leaves a
  hidden folder, replaced by the next publication of that name once the marker is older than the
  lock lease.
* **Aliases** are single objects: a PUT replaces one atomically (readers see old or new).
* **Writers are serialised** by a lease object, ``<prefix>/.lock``, moved only by conditional
  writes (AWS S3 since 2024, MinIO, Ceph RGW): created with ``If-None-Match: *``; taken when it
  reads free, or stale, with ``If-Match`` on the ETag just read (of several waiters exactly one
  wins); renewed by its holder every third of its TTL and released by rewriting it as free, both
  with ``If-Match`` on the holder's own ETag. It is never deleted: MinIO ignores ``If-Match`` on
  DELETE. Stale means not renewed for a TTL by the *server's* clock (a dead writer). Every write
  inside :meth:`S3Storage.lock` renews the lease first, so a writer that lost it writes nothing.
  A server that ignores conditional writes would let two writers in: the first lock of each
  process checks that a wrong ``If-None-Match`` and ``If-Match`` are both refused and raises
  :class:`~scoring.registry.RegistryError` if not (reading still works).
* **Local files** (the booster for GTIL, the compiled library to ``dlopen``) are downloaded into a
  content-addressed cache, ``<cache_dir>/s3-objects/<sha256>/<name>``, keyed by the digest the
  manifest records. Entries are written only under the digest of their actual bytes; a hit is used
  only while the bucket's object keeps the ETag it had when downloaded (one HEAD) and the copy
  still hashes to its name. The registry still checks every digest itself: a tampered object in
  the bucket raises :class:`~scoring.compiled.ModelIntegrityError` on every load, as with a local
  registry.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoring.compiled import file_sha256
from scoring.registry import MANIFEST, RegistryError, VersionExistsError

if TYPE_CHECKING:
    from scoring.settings import S3Settings

log = logging.getLogger(__name__)

__all__ = ["S3Storage"]

LOCK_KEY = ".lock"
INCOMPLETE = ".incomplete"
CACHE_FOLDER = "s3-objects"
#: Cached artifacts kept per cache directory (the newest used); older ones are removed.
CACHE_MAX_ENTRIES = 64
_CHUNK = 1 << 20
#: The lock object when no writer holds it.
_FREE = b'{"owner": null}'


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _not_found(exc: Exception) -> bool:
    return _error_code(exc) in ("NoSuchKey", "404", "NotFound") or _status(exc) == 404


def _precondition_failed(exc: Exception) -> bool:
    # 412: the condition does not hold; 409 ConditionalRequestConflict: AWS's answer while another
    # conditional write of the same key is in flight. Both mean "someone else got there".
    return _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _status(
        exc
    ) in (409, 412)


def _server_time(response: Mapping[str, Any]) -> datetime | None:
    """The server's clock, from the ``Date`` header of one of its responses."""
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not header:
        return None
    try:
        return email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None


@dataclass
class _Lease:
    """The lock object this thread holds: its key, what was written, the ETag of the last write."""

    key: str
    body: bytes
    etag: str
    lost: bool = False
    mutex: threading.Lock = field(default_factory=threading.Lock)


class S3Storage:
    """A registry under ``s3://bucket/prefix`` (see the module docstring for the semantics)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        cache_dir: str | Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        client: Any = None,
        lock_ttl_s: float = 60.0,
        lock_timeout_s: float = 300.0,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 registry needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.cache_dir = Path(cache_dir)
        self.lock_ttl_s = lock_ttl_s
        self.lock_timeout_s = lock_timeout_s
        self._conditional_writes_checked = False
        self._held = threading.local()  # .lease: the _Lease of this thread's lock() block
        self.client = client or self._make_client(
            endpoint_url=self.endpoint_url,
            region=region or None,
            access_key_id=access_key_id or None,
            secret_access_key=secret_access_key or None,
        )

    @classmethod
    def from_settings(cls, settings: S3Settings, *, cache_dir: str | Path) -> S3Storage:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        return cls(
            settings.bucket,
            settings.prefix,
            cache_dir=cache_dir,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            access_key_id=secret(settings.access_key_id),
            secret_access_key=secret(settings.secret_access_key),
        )

    @staticmethod
    def _make_client(
        *,
        endpoint_url: str | None,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
    ) -> Any:
        import boto3  # ~0.3 s; only services with an S3 registry pay it
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # S3-compatible servers do not all understand the CRC trailers boto3 >= 1.36 sends by
            # default; digests are the registry's business (SHA-256 in the manifest) anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # A custom endpoint (MinIO...) rarely resolves bucket subdomains.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        return session.client("s3", endpoint_url=endpoint_url, config=config)

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    # ---- keys ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"bad key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder(self, prefix: str) -> str:
        """The S3 key prefix of a registry "folder" (ends in '/'; '' is the registry root)."""
        return self._key(prefix) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")

    def _keys_under(self, folder: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
            yield from page.get("Contents", [])

    # ---- reading ------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _not_found(exc):
                raise FileNotFoundError(f"{self.describe()}/{key}") from None
            raise
        with contextlib.closing(response["Body"]) as body:
            return bytes(body.read())

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            if not _not_found(exc):
                raise
        listing = self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=self._folder(key), MaxKeys=1
        )
        return bool(listing.get("KeyCount", 0))

    def list_children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix``: objects, and folders unless still being published."""
        folder = self._folder(prefix)
        files: set[str] = set()
        folders: set[str] = set()
        incomplete: set[str] = set()
        for item in self._keys_under(folder):
            rest = item["Key"][len(folder) :]
            head, sep, tail = rest.partition("/")
            if not sep:
                files.add(head)
            else:
                folders.add(head)
                if tail == INCOMPLETE:
                    incomplete.add(head)
        return sorted(files | (folders - incomplete))

    def local_file(self, key: str, sha256: str | None = None) -> Path:
        """A downloaded copy in the content-addressed cache (``sha256`` names the entry).

        A cached copy is used only while the bucket's object still has the ETag it had when it
        was downloaded (one HEAD) and the copy still has its digest: an object replaced in the
        bucket is downloaded again, so tampering is seen on every load, as with a local registry.
        """
        name = key.rsplit("/", 1)[-1]
        root = self.cache_dir / CACHE_FOLDER
        if sha256 is not None and (root / sha256 / name).is_file():
            cached, etag_file = root / sha256 / name, root / sha256 / f".{name}.etag"
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as exc:
                if _not_found(exc):
                    raise FileNotFoundError(f"{self.describe()}/{key}") from None
                raise
            recorded = etag_file.read_text() if etag_file.is_file() else None
            if recorded == head.get("ETag") and file_sha256(cached) == sha256:
                os.utime(cached)  # most recently used: kept by the pruning below
                return cached
        root.mkdir(parents=True, exist_ok=True)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _not_found(exc):
                raise FileNotFoundError(f"{self.describe()}/{key}") from None
            raise
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=root)
        try:
            with os.fdopen(fd, "wb") as fh, contextlib.closing(response["Body"]) as body:
                for chunk in iter(lambda: body.read(_CHUNK), b""):
                    digest.update(chunk)
                    fh.write(chunk)
            # Filed under the digest of what arrived, whatever was expected: an entry's name is
            # always its content's digest. A mismatch is left for the caller's check to refuse.
            entry = root / digest.hexdigest()
            entry.mkdir(exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, entry / name)
            _write_text_atomic(entry / f".{name}.etag", str(response.get("ETag", "")))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._prune(root)
        return entry / name

    def _prune(self, root: Path) -> None:
        entries = [p for p in root.iterdir() if p.is_dir()]
        if len(entries) <= CACHE_MAX_ENTRIES:
            return

        def last_used(entry: Path) -> float:
            return max((f.stat().st_mtime for f in entry.iterdir()), default=0.0)

        # A library still mapped by this process survives the unlink (Linux keeps the inode).
        for entry in sorted(entries, key=last_used)[: len(entries) - CACHE_MAX_ENTRIES]:
            for f in entry.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            with contextlib.suppress(OSError):
                entry.rmdir()

    # ---- writing ------------------------------------------------------------------------

    def _put(self, key: str, body: bytes | Any, **conditions: str) -> str:
        response = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **conditions)
        return str(response.get("ETag", ""))

    def publish(self, prefix: str, files: Mapping[str, Path]) -> None:
        """Upload a version's files under ``prefix/``, the manifest last; ``VersionExistsError``
        if the version exists (or is being published by someone else)."""
        folder = self._folder(prefix)
        marker = folder + INCOMPLETE
        existing = list(self._keys_under(folder))
        if existing:
            self._clear_abandoned(prefix, folder, existing)
        self._confirm_lease()
        try:
            self._put(marker, b"", IfNoneMatch="*")
        except Exception as exc:
            if _precondition_failed(exc):
                raise VersionExistsError(f"{prefix} is being published by another writer") from None
            raise
        names = sorted(files, key=lambda n: (n == MANIFEST, n))  # the manifest last
        try:
            for name in names:
                if "/" in name or name in ("", ".", "..", INCOMPLETE):
                    raise ValueError(f"bad file name {name!r}")
                with open(files[name], "rb") as fh:
                    try:
                        self._put(folder + name, fh, IfNoneMatch="*")
                    except Exception as exc:
                        if _precondition_failed(exc):
                            raise VersionExistsError(
                                f"{prefix}/{name} exists; versions are immutable"
                            ) from None
                        raise
        except BaseException:
            # Leave the marker: the folder stays hidden, and is replaced by the next publication
            # of this name once the marker is older than the lock lease.
            log.warning("publishing %s failed; its partial folder stays hidden", prefix)
            raise
        self._confirm_lease()  # the version appears (marker gone) only under a held lease
        self.client.delete_object(Bucket=self.bucket, Key=marker)

    def _clear_abandoned(self, prefix: str, folder: str, existing: list[dict[str, Any]]) -> None:
        marker = next((o for o in existing if o["Key"] == folder + INCOMPLETE), None)
        if marker is None:
            raise VersionExistsError(f"{prefix} exists; versions are immutable")
        head = self.client.head_object(Bucket=self.bucket, Key=marker["Key"])
        now = _server_time(head)
        modified = head.get("LastModified")
        if now is None or modified is None or (now - modified).total_seconds() < self.lock_ttl_s:
            raise VersionExistsError(f"{prefix} is being published by another writer")
        log.warning("removing the abandoned, never completed publication %s", prefix)
        for item in existing:
            if item["Key"] != marker["Key"]:
                self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
        self.client.delete_object(Bucket=self.bucket, Key=marker["Key"])

    def write_atomic(self, key: str, data: bytes) -> None:
        # One PUT: S3 replaces an object atomically (readers get the old or the new bytes).
        self._confirm_lease()
        self._put(self._key(key), data)

    # ---- the writers' lease -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``<prefix>/.lock`` (a lease renewed in the background) while the block runs;
        wait for it up to ``lock_timeout_s``.

        Every write inside the block first renews the lease synchronously, so a writer that lost
        it (paused for longer than the TTL, then taken over) raises instead of writing.
        """
        key = self._key(LOCK_KEY)
        body = json.dumps(
            {
                "owner": uuid.uuid4().hex,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": datetime.now(UTC).isoformat(),
                "ttl_s": self.lock_ttl_s,
            }
        ).encode()
        lease = _Lease(key, body, self._acquire(key, body))
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_every, args=(lease, stop), name="registry-lease", daemon=True
        )
        renewer.start()
        self._held.lease = lease
        try:
            yield
        finally:
            self._held.lease = None
            stop.set()
            renewer.join()
            self._release(lease)

    def _acquire(self, key: str, body: bytes) -> str:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            etag, holder = self._try_acquire(key, body)
            if etag is not None:
                self._check_conditional_writes(key, body, etag)
                return etag
            if time.monotonic() >= deadline:
                raise RegistryError(
                    f"the registry lock {self.describe()}/{LOCK_KEY} is still held after "
                    f"{self.lock_timeout_s:.0f} s ({holder})"
                )
            time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 -- jitter, not secrecy
            delay = min(delay * 2, 0.5)

    def _try_acquire(self, key: str, body: bytes) -> tuple[str | None, str]:
        """(our ETag, "") when the lease is ours now, else (None, who holds it).

        The lock object is never deleted (not every server honours If-Match on DELETE): it is
        created with If-None-Match, released by rewriting it as free, and taken — when free, or
        stale by the server's clock — with If-Match on the ETag just read, so of several writers
        that saw the same state exactly one wins.
        """
        try:
            return self._put(key, body, IfNoneMatch="*"), ""
        except Exception as exc:
            if not _precondition_failed(exc):
                raise
        try:
            current = self.client.get_object(Bucket=self.bucket, Key=key)
            with contextlib.closing(current["Body"]) as stream:
                state = json.loads(stream.read() or b"{}")
        except Exception as exc:
            if _not_found(exc):
                return None, "released meanwhile"
            if isinstance(exc, ValueError):  # not JSON: someone else's object; treat as held
                state = {"owner": "?"}
            else:
                raise
        if not isinstance(state, dict):
            state = {"owner": "?"}
        now, modified = _server_time(current), current.get("LastModified")
        age = (now - modified).total_seconds() if now and modified else None
        if state.get("owner") is not None and (age is None or age < self.lock_ttl_s):
            renewed = "unknown" if age is None else f"{age:.0f} s ago"
            return None, f"held by {state.get('host', '?')} pid {state.get('pid', '?')}, " + (
                f"renewed {renewed}"
            )
        try:
            etag = self._put(key, body, IfMatch=current["ETag"])
        except Exception as exc:
            if _precondition_failed(exc) or _not_found(exc):
                return None, "taken by another writer"
            raise
        if state.get("owner") is not None:
            log.warning(
                "took over the registry lock of %s pid %s: not renewed for %.0f s",
                state.get("host", "?"), state.get("pid", "?"), age,
            )  # fmt: skip
        return etag, ""

    def _check_conditional_writes(self, key: str, body: bytes, etag: str) -> None:
        """Once per process: refuse a server that ignores If-None-Match or If-Match on PUT
        (it would let several writers in). Both probes target the lease we hold; a server that
        honours them changes nothing, one that does not rewrites our own bytes."""
        if self._conditional_writes_checked:
            return
        ignored = []
        for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"00000000000000000000000000000000"'}):
            try:
                self._put(key, body, **condition)
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
            else:
                ignored.append(next(iter(condition)))
        if not ignored:
            self._conditional_writes_checked = True
            return
        with contextlib.suppress(Exception):
            self._put(key, _FREE)
        raise RegistryError(
            f"{self.describe()}: the server ignores conditional writes ({', '.join(ignored)}), so "
            "the registry cannot serialise its writers; use a server that supports them (AWS S3, "
            "MinIO, Ceph RGW) — reading works, writing is refused"
        )

    def _renew(self, lease: _Lease) -> bool:
        """Rewrite the lease if it is still ours (False: it was taken over)."""
        with lease.mutex:
            if lease.lost:
                return False
            try:
                lease.etag = self._put(lease.key, lease.body, IfMatch=lease.etag)
            except Exception as exc:
                if _precondition_failed(exc) or _not_found(exc):
                    lease.lost = True
                    log.error("lost the registry lock: taken over as stale by another writer")
                    return False
                raise
            return True

    def _renew_every(self, lease: _Lease, stop: threading.Event) -> None:
        while not stop.wait(self.lock_ttl_s / 3):
            try:
                if not self._renew(lease):
                    return
            except Exception as exc:  # the network: the next round retries, the TTL is the limit
                log.warning("renewing the registry lock failed (%s); retrying", exc)

    def _confirm_lease(self) -> None:
        """Inside lock(): renew now, and refuse to write if the lease is no longer ours."""
        lease: _Lease | None = getattr(self._held, "lease", None)
        if lease is not None and not self._renew(lease):
            raise RegistryError(
                f"{self.describe()}: this writer lost the registry lock (paused longer than its "
                f"{self.lock_ttl_s:.0f} s lease); nothing was written"
            )

    def _release(self, lease: _Lease) -> None:
        """Rewrite the lease as free, if it is still ours."""
        with lease.mutex:
            if lease.lost:
                return
            try:
                self._put(lease.key, _FREE, IfMatch=lease.etag)
            except Exception as exc:
                if _precondition_failed(exc) or _not_found(exc):
                    log.error("the registry lock was taken over before this writer released it")
                    return
                raise


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
