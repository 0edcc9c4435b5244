import typer

app = typer.Typer(help="Run or inspect the Kafka broker.", no_args_is_help=True)


@app.command()
def fetch() -> None:
    """Download the broker jars (placeholder until the broker runner lands)."""
