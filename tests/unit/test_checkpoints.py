"""CheckpointStore: save/restore round trip, the newest acceptable one, skipping what cannot be
used (another identity, a damaged file), keeping the newest ``keep``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from scoring.logs import TIMESTAMP
from stream.checkpoints import BackgroundWriter, CheckpointStore
from stream.label_index import LabelIndex
from stream.merge import LABELS, TRANSACTIONS, SourceId

IDENTITY: dict[str, object] = {
    "transactions": "transactions",
    "labels": "labels",
    "features": ["amount", "card_tx_count_1h"],
}


def positions(tx0: int, tx1: int = 0, labels0: int = 0) -> dict[SourceId, int]:
    return {
        SourceId(TRANSACTIONS, 0): tx0,
        SourceId(TRANSACTIONS, 1): tx1,
        SourceId(LABELS, 0): labels0,
    }


def index_table() -> pa.Table:
    index = LabelIndex(86_400_000)
    index.add(
        pa.table(
            {
                "transaction_id": ["t1", "t2", "t1"],
                "card_id": ["c1", "c2", "c3"],
                "timestamp": pa.array([1, 2, 3], pa.int64()).cast(TIMESTAMP),
                "bank_id": ["b1", None, "b2"],
                "merchant_id": ["m1", "m2", None],
                "terminal_id": [None, "x2", "x3"],
            }
        )
    )
    return index.to_table()


def engine_bytes(seed: int) -> bytes:
    return bytes((seed * 7 + i) % 256 for i in range(50_000))


def store(directory: Path, **kwargs: object) -> CheckpointStore:
    kwargs.setdefault("identity", IDENTITY)
    return CheckpointStore(directory, **kwargs)  # type: ignore[arg-type]


def anything(_: dict[SourceId, int]) -> bool:
    return True


def test_save_and_restore_round_trip(tmp_path: Path) -> None:
    checkpoints = store(tmp_path / "state")
    assert checkpoints.newest(anything) is None
    table = index_table()
    path = checkpoints.save(positions(10, 20, 30), engine_bytes(1), table)
    assert path.parent == tmp_path / "state" and path.suffix == ".npz"
    restored = checkpoints.newest(anything)
    assert restored is not None
    assert restored.path == path
    assert restored.positions == positions(10, 20, 30)
    assert restored.engine == engine_bytes(1)
    assert restored.label_index.equals(table)
    assert isinstance(restored.created_at, float) and restored.created_at > 0
    # What is restored rebuilds the same index.
    again = LabelIndex.from_table(restored.label_index, 86_400_000)
    assert again.to_table().equals(table)


def test_an_empty_label_index_and_no_positions_round_trip(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    empty = LabelIndex(1).to_table()
    checkpoints.save({}, b"", empty)
    restored = checkpoints.newest(anything)
    assert restored is not None
    assert restored.positions == {} and restored.engine == b""
    assert restored.label_index.equals(empty)


def test_newest_acceptable_is_chosen(tmp_path: Path) -> None:
    checkpoints = store(tmp_path, keep=5)
    for i, offset in enumerate([100, 200, 300]):
        checkpoints.save(positions(offset), engine_bytes(i), index_table())
    newest = checkpoints.newest(anything)
    assert newest is not None and newest.positions == positions(300)
    assert newest.engine == engine_bytes(2)

    seen: list[int] = []

    def not_ahead_of_250(p: dict[SourceId, int]) -> bool:
        seen.append(p[SourceId(TRANSACTIONS, 0)])
        return p[SourceId(TRANSACTIONS, 0)] <= 250

    chosen = checkpoints.newest(not_ahead_of_250)
    assert chosen is not None and chosen.positions == positions(200)
    assert chosen.engine == engine_bytes(1)
    assert seen == [300, 200]  # newest first, stops at the first acceptable
    assert checkpoints.newest(lambda p: False) is None


def test_sequence_numbers_keep_growing_across_stores(tmp_path: Path) -> None:
    first = store(tmp_path, keep=2)
    names = [first.save(positions(i), b"x", index_table()).name for i in range(3)]
    second = store(tmp_path, keep=2)  # a restarted worker
    names.append(second.save(positions(3), b"y", index_table()).name)
    assert names == [f"checkpoint-{n:012d}.npz" for n in (1, 2, 3, 4)]
    newest = second.newest(anything)
    assert newest is not None and newest.positions == positions(3)


def test_only_the_newest_keep_remain_and_no_temporary_is_left(tmp_path: Path) -> None:
    checkpoints = store(tmp_path, keep=3)
    saved = [checkpoints.save(positions(i), engine_bytes(i), index_table()) for i in range(6)]
    assert checkpoints.paths() == saved[:2:-1]  # newest first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in saved[3:])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_wiped_directory_is_recreated(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    checkpoints = store(directory)
    checkpoints.save(positions(1), b"a", index_table())
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    checkpoints.save(positions(2), b"b", index_table())
    restored = checkpoints.newest(anything)
    assert restored is not None and restored.positions == positions(2)


def test_another_identity_is_skipped(tmp_path: Path) -> None:
    mine = store(tmp_path, keep=5)
    mine.save(positions(1), b"mine", index_table())
    theirs = store(tmp_path, keep=5, identity={**IDENTITY, "features": ["amount"]})
    theirs.save(positions(2), b"theirs", index_table())
    chosen = mine.newest(anything)
    assert chosen is not None and chosen.engine == b"mine"
    other = theirs.newest(anything)
    assert other is not None and other.engine == b"theirs"
    stranger = store(tmp_path, identity={**IDENTITY, "labels": "other-labels"})
    assert stranger.newest(anything) is None


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # one bit in the engine snapshot (the zip's CRC no longer matches)
        damaged = bytearray(data)
        damaged[data.index(engine_bytes(2)[:64]) + 1000] ^= 0x01
        path.write_bytes(bytes(damaged))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "empty",
        "truncated",
        "flipped",
    ],
)
def test_a_damaged_checkpoint_is_skipped_for_an_older_one(tmp_path: Path, how: str) -> None:
    checkpoints = store(tmp_path, keep=5)
    checkpoints.save(positions(1), engine_bytes(1), index_table())
    newest = checkpoints.save(positions(2), engine_bytes(2), index_table())
    _damage(newest, how)
    chosen = checkpoints.newest(anything)
    assert chosen is not None
    assert chosen.positions == positions(1) and chosen.engine == engine_bytes(1)


def test_a_leftover_temporary_file_is_never_read(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    checkpoints.save(positions(1), b"done", index_table())
    (tmp_path / "checkpoint-000000000002.tmp").write_bytes(b"half written")
    chosen = checkpoints.newest(anything)
    assert chosen is not None and chosen.engine == b"done"
    nxt = checkpoints.save(positions(2), b"next", index_table())
    assert nxt.name == "checkpoint-000000000002.npz"
    assert os.path.exists(nxt)


def test_the_background_writer_saves_one_checkpoint_at_a_time(tmp_path: Path) -> None:
    """The worker's loop hands a checkpoint over and goes on; a second one while the first is
    still being written is refused (the loop tries again later), never queued or interleaved."""
    checkpoints = store(tmp_path)
    saved: list[Path] = []
    release = threading.Event()

    def slow_table() -> pa.Table:
        release.wait(10)
        return index_table()

    writer = BackgroundWriter(checkpoints, saved.append)
    assert writer.submit(positions(5), lambda: engine_bytes(5), slow_table)
    assert writer.busy
    assert not writer.submit(positions(6), lambda: engine_bytes(6), index_table)
    release.set()
    writer.wait(10)
    assert not writer.busy
    assert [p.name for p in saved] == [p.name for p in checkpoints.paths()]
    found = checkpoints.newest(anything)
    assert found is not None and found.positions == positions(5)
    assert found.engine == engine_bytes(5)


def test_a_failed_background_write_is_logged_and_the_older_checkpoints_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoints = store(tmp_path)
    checkpoints.save(positions(1), engine_bytes(1), index_table())
    saved: list[Path] = []

    def broken() -> pa.Table:
        raise OSError("No space left on device")

    writer = BackgroundWriter(checkpoints, saved.append)
    assert writer.submit(positions(2), lambda: engine_bytes(2), broken)
    writer.wait(10)
    assert saved == []
    assert "writing a checkpoint failed" in caplog.text and "No space left" in caplog.text
    found = checkpoints.newest(anything)
    assert found is not None and found.positions == positions(1)
    assert writer.submit(positions(3), lambda: engine_bytes(3), index_table)  # free again
    writer.wait(10)
    assert len(saved) == 1
