"""The `ftmed` entry point: registers the commands; each lives in its own module."""

from __future__ import annotations

import typer

from cli import data as data_cmd
from cli.errors import FtmedGroup
from cli.compare import compare
from cli.export import export
from cli.parity import parity
from cli.report import report
from cli.train import train
from cli.variants import variants

app = typer.Typer(
    name="ftmed",
    help="Fine-tuning experiments on MedMNIST in PyTorch Lightning and Keras, with proof that they agree.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=FtmedGroup,
)
app.command()(train)
app.command()(compare)
app.command()(report)
app.command()(variants)
app.command()(parity)
app.command()(export)
app.add_typer(data_cmd.app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
