"""The one `genfoundry` command. Each system registers its own sub-commands from `<system>/cli.py`."""

from __future__ import annotations

import importlib
import typer

from genfoundry import __version__

app = typer.Typer(
    name="genfoundry",
    help="Efficient generative AI from model to silicon: SANA, SVDQuant/Nunchaku, VILA-U, LEGO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module exposes `register(app)`; listed here so the command set is explicit.
_COMMAND_MODULES = [
    "genfoundry.shapes.cli",
    "genfoundry.tour",
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"genfoundry {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Efficient generative AI from model to silicon."""


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
