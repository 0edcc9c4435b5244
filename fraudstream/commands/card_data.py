"""``fraudstream tokenize`` and ``fraudstream scan-card-data``: card numbers in, tokens out; and
looking for card numbers where none may be (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fraudstream.commands.common import console, fail


def tokenize(
    key_id: Annotated[
        str | None,
        typer.Option(help="Tokenize under this key id instead of the active one (earlier tokens)."),
    ] = None,
) -> None:
    """Read card numbers from standard input (one per line), print their card_id tokens.

    The key is FRAUD_API__TOKENIZATION_KEY, the API's (docs/api.md): the same card gets the same
    card_id on both paths. Card numbers are never taken as arguments (shell history, ps); a bad
    line is reported by its number, never repeated.
    """
    import sys

    from scoring.settings import get_settings
    from scoring.tokenize import (
        BadCardNumberError,
        TokenizationConfigError,
        tokenizer_from_settings,
    )

    api = get_settings().api
    secret = api.tokenization_key.get_secret_value() if api.tokenization_key else None
    try:
        tokenizer = tokenizer_from_settings(secret, development=api.development)
    except TokenizationConfigError as exc:
        raise fail(str(exc)) from None
    if tokenizer is None:
        raise fail("no tokenization key: set FRAUD_API__TOKENIZATION_KEY (docs/api.md)")
    bad = 0
    for line_no, line in enumerate(sys.stdin, start=1):
        number = line.strip()
        if not number:
            continue
        try:
            print(tokenizer.tokenize(number, key_id=key_id))
        except BadCardNumberError as exc:
            bad += 1
            print(f"line {line_no}: {exc}", file=sys.stderr)
        except TokenizationConfigError as exc:
            raise fail(str(exc)) from None
    if bad:
        raise typer.Exit(1)


def scan_card_data(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or directories to scan (recursively).")
    ] = None,
    topics: Annotated[
        bool,
        typer.Option(
            help="Also scan every record of the deployment's topics (FRAUD_KAFKA__TOPIC_PREFIX)."
        ),
    ] = False,
) -> None:
    """Look for card numbers (Luhn-valid 13-19 digits, docs/security.md) in files and topics.

    Prints each hit masked (first and last four digits) with where it is; exits 1 on any hit.
    """
    from scoring.card_data import FoundIn, scan_files
    from scoring.settings import get_settings

    if not paths and not topics:
        raise fail("nothing to scan: give paths and/or --topics")
    found: list[FoundIn] = []
    with console.status("scanning files"):
        in_files, files = scan_files(*(paths or []))
    found += in_files
    summary = f"{files:,} files"
    if topics:
        from stream.card_scan import scan_topics

        with console.status("scanning topics"):
            in_topics, records = scan_topics(get_settings().kafka)
        found += in_topics
        summary += f", {records:,} records"
    for item in found:
        console.print(f"card number: {item}", markup=False)
    console.print(f"scanned {summary}: {len(found)} card numbers found", markup=False)
    if found:
        raise typer.Exit(1)
