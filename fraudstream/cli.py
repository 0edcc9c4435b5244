"""The ``fraudstream`` console script: one Typer app fronting every verb (DESIGN.md §7).

This package is the composition root. ``stream``, ``training`` and ``api`` may not import each
other, so the verbs that span them live here. Each verb's module imports its heavy dependencies
inside the command function, so ``fraudstream --help`` stays fast.
"""

import typer

from fraudstream.commands import (
    api,
    bench,
    card_data,
    convert,
    demo,
    kafka,
    models,
    offline,
    replay,
    simulate,
    trainer,
    worker,
)

app = typer.Typer(
    name="fraudstream",
    help="Card-fraud detection on Kafka: simulate, train, score, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold card tokens and keys
)
app.add_typer(kafka.app, name="kafka")
app.command("simulate")(simulate.simulate)
app.command("train")(offline.train)
app.command("score-log")(offline.score_log)
app.command("evaluate")(offline.evaluate)
app.add_typer(models.app, name="models")
app.command("replay")(replay.replay)
app.command("worker")(worker.worker)
app.command("api")(api.api)
app.command("tokenize")(card_data.tokenize)
app.command("scan-card-data")(card_data.scan_card_data)
app.command("trainer")(trainer.trainer)
app.command("up")(demo.up)
app.command("demo")(demo.demo)
app.command("bench")(bench.bench)
app.command("convert")(convert.convert)
