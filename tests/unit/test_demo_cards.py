"""The demo's card numbers (fraudstream/commands/demo_cards.py) and its end-of-run scan
(fraudstream/commands/run_scan.py), without a broker: the whole-stack run is
tests/integration/test_demo.py."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from fraudstream.commands.demo_cards import (
    NETWORKS,
    card_numbers_for,
    synthetic_card_number,
    tokenize_bank_cards,
)
from fraudstream.commands.run_scan import broker_paths, scan_run
from scoring.card_data import find_card_numbers
from scoring.records import luhn_valid
from scoring.settings import KafkaSettings
from scoring.tokenize import CardTokenizer

TOKENIZER = CardTokenizer.parse("a-test-tokenization-key-of-32-chars-or-more")
CARD_IDS = [f"card_{i:06d}" for i in range(3000)]


def test_card_numbers_are_valid_distinct_deterministic_and_of_every_network() -> None:
    numbers = card_numbers_for(CARD_IDS)
    assert len(set(numbers.values())) == len(CARD_IDS)
    assert numbers == card_numbers_for(list(reversed(CARD_IDS)))  # the order does not matter
    for card_id, number in numbers.items():
        assert number == synthetic_card_number(card_id)  # no collision at this size
        assert number.isdigit() and 13 <= len(number) <= 19
        assert luhn_valid(number)
    shapes = {
        (prefix, length)
        for prefix, length in NETWORKS
        for n in numbers.values()
        if n.startswith(prefix) and len(n) == length
    }
    assert shapes == set(NETWORKS)


def test_the_scanner_would_see_every_demo_card_number_if_one_leaked() -> None:
    # The demo's scan can only prove something if its numbers are of a kind the scanner finds.
    for number in list(card_numbers_for(CARD_IDS).values())[:500]:
        body = json.dumps({"card_number": number, "amount": 12.5}).encode()
        assert [hit.masked[-4:] for hit in find_card_numbers(body)] == [number[-4:]]


def test_a_collision_moves_the_later_card_to_its_next_number() -> None:
    first = synthetic_card_number("card_a")
    assert synthetic_card_number("card_a", 1) != first
    assert luhn_valid(synthetic_card_number("card_a", 1))


def test_only_the_banks_cards_become_tokens_of_their_card_numbers() -> None:
    table = pa.table(
        {
            "transaction_id": ["t1", "t2", "t3", "t4"],
            "card_id": ["card_000001", "card_000002", "card_000001", "card_000003"],
            "bank_id": ["bank01", "bank02", "bank01", "bank01"],
        },
        schema=pa.schema(
            [
                pa.field("transaction_id", pa.string(), nullable=False),
                pa.field("card_id", pa.string(), nullable=False),
                pa.field("bank_id", pa.string()),
            ]
        ),
    )
    out, numbers = tokenize_bank_cards(table, "bank01", TOKENIZER)
    assert out.schema == table.schema
    ids = out["card_id"].to_pylist()
    assert ids[1] == "card_000002"  # another bank's card
    assert ids[0] == ids[2] != ids[3]  # one card, one token
    assert set(numbers) == {ids[0], ids[3]}
    for token, number in numbers.items():
        assert token.startswith("tok_k1_")
        assert TOKENIZER.tokenize(number) == token  # what the API makes of card_number
    assert numbers[ids[0]] == synthetic_card_number("card_000001")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_broker_paths_are_the_runs_partitions_internal_topics_config_and_logs(
    tmp_path: Path,
) -> None:
    home = tmp_path / "broker"
    _write(home / "data" / "demo-1.transactions-0" / "00.log", "x")  # read through the broker
    _write(home / "data" / "demo-1.transactions-0" / "00.index", "x")  # binary offsets only
    _write(home / "data" / "demo-1.transactions-0" / "00.timeindex", "x")
    epoch = _write(home / "data" / "demo-1.transactions-0" / "leader-epoch-checkpoint", "x")
    snapshot = _write(home / "data" / "demo-1.decisions-2" / "00.snapshot", "x")
    internal = _write(home / "data" / "__consumer_offsets-0" / "00.log", "x")
    _write(home / "data" / "__consumer_offsets-0" / "00.index", "x")
    _write(home / "data" / "other-run.transactions-0" / "00.log", "x")
    _write(home / "data" / "other-run.transactions-0" / "00.snapshot", "x")
    meta = _write(home / "data" / "meta.properties", "x")
    server_log = _write(home / "logs" / "server.log", "x").parent
    config = _write(home / "server.properties", "x")
    paths = broker_paths(home, "demo-1.")
    assert set(paths) == {epoch, snapshot, internal, meta, server_log, config}


def test_scan_run_finds_a_card_number_in_the_run_or_its_broker_files_and_nothing_else(
    tmp_path: Path,
) -> None:
    number = synthetic_card_number("card_000042")
    run = tmp_path / "run"
    home = tmp_path / "broker"
    kafka = KafkaSettings(topic_prefix="run-1.")
    _write(run / "logs" / "api.log", "INFO started\nINFO card tok_k1_abcdefgh answered\n")
    _write(home / "logs" / "server.log", "INFO broker started\n")
    _write(home / "data" / "other-run.transactions-0" / "00.log", f'{{"card_id":"{number}"}}')
    clean = scan_run(run, kafka, topics=False)
    assert (clean.found, clean.files, clean.records) == ([], 1, 0)
    assert clean.line().startswith("card numbers found: 0 in 0 records, 1 files (")
    # another deployment's topic in the shared broker directory is not the run's
    with_broker = scan_run(run, kafka, broker_home=home, topics=False)
    assert (with_broker.found, with_broker.files) == ([], 2)

    _write(home / "data" / "run-1.decisions-0" / "00.snapshot", f"... {number} ...")
    _write(run / "logs" / "worker-1.log", f"WARNING bad card {number}\n")
    found = scan_run(run, kafka, broker_home=home, topics=False).found
    assert sorted(Path(f.where).name for f in found) == ["00.snapshot", "worker-1.log"]
    assert {f.hit.masked for f in found} == {number[:4] + "*" * (len(number) - 8) + number[-4:]}
    assert (
        scan_run(run, kafka, topics=False)
        .line()
        .startswith("card numbers found: 1 in 0 records, 2 files (")
    )


def test_a_broker_scan_needs_the_runs_prefix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefix"):
        broker_paths(tmp_path, "")
