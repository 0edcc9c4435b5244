"""``fraudstream convert``: a foreign transactions file → our transactions and labels logs."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraudstream.commands.common import console, fail, steps

if TYPE_CHECKING:
    import pyarrow as pa


def convert(
    source: Annotated[
        Path, typer.Option("--input", help="The file to convert (.csv[.gz], .parquet, .jsonl).")
    ],
    mapping: Annotated[
        Path, typer.Option("--map", help="Column mapping (TOML; examples in docs/mappings/).")
    ],
    transactions: Annotated[
        Path, typer.Option(help="Transactions log to write (.parquet/.csv/.jsonl).")
    ],
    labels: Annotated[
        Path | None, typer.Option(help="Labels log to write (the mapping's [labels] section).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Convert only the first N rows (a quick look).")
    ] = None,
) -> None:
    """Map a public card-fraud dataset's columns onto the log format (DESIGN.md §2).

    Only mapped fields are written; card numbers become tokens (FRAUD_API__TOKENIZATION_KEY, the
    API's key); nothing is written unless every row passes the log readers' checks."""
    from scoring.log_mapping import (
        MappingError,
        degraded_features,
        load_mapping,
        read_any,
    )
    from scoring.log_mapping import (
        convert as run_convert,
    )
    from scoring.logs import LogError, read_labels, read_transactions, write_log
    from scoring.settings import get_settings
    from scoring.tokenize import TokenizationConfigError, tokenizer_from_settings

    try:
        spec = load_mapping(mapping)
    except (MappingError, OSError) as exc:
        raise fail(str(exc)) from None
    if labels is not None and not spec.has_labels:
        raise fail(f"{mapping}: --labels given but the mapping has no [labels] section")
    api = get_settings().api
    try:
        secret = api.tokenization_key.get_secret_value() if api.tokenization_key else None
        tokenizer = tokenizer_from_settings(secret, development=api.development)
    except TokenizationConfigError as exc:
        raise fail(str(exc)) from None
    with steps() as progress:
        task = progress.add_task(f"reading {source.name}")
        try:
            table = read_any(source, spec.csv_delimiter)
            if limit is not None:
                table = table.slice(0, limit)
            progress.update(task, description=f"mapping {table.num_rows:,} rows")
            result = run_convert(table, spec, tokenizer=tokenizer, file=source.name)
            progress.update(task, description="checking and writing")
            _write_checked(result.transactions, transactions, read_transactions, write_log)
            if labels is not None and result.labels is not None:
                _write_checked(result.labels, labels, read_labels, write_log)
        except (MappingError, LogError, FileNotFoundError, ValueError) as exc:
            raise fail(f"converting {source} with {mapping}:\n{exc}") from None
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    absent = degraded_features(set(spec.transactions))
    console.print(f"wrote {result.transactions.num_rows:,} transactions to {transactions}")
    if labels is not None and result.labels is not None:
        frauds = result.labels.filter(result.labels["is_fraud"]).num_rows
        console.print(f"wrote {result.labels.num_rows:,} labels ({frauds:,} frauds) to {labels}")
    for field, features in sorted(absent.items()):
        console.print(f"absent: {field} → {len(features)} features missing (NaN)")


def _write_checked(
    table: pa.Table,
    path: Path,
    read: Callable[[Path], pa.Table],
    write: Callable[[pa.Table, Path], Path],
) -> None:
    """Write into a hidden folder beside ``path``, read it back with the log reader's checks, then
    move it into place: an invalid or half-written log never appears under the final name (and
    the reader's errors name the file as the user will see it)."""
    staging = path.parent / f".converting-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        write(table, staging / path.name)
        read(staging / path.name)
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
