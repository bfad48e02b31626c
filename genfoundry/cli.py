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
    "genfoundry.tour",
    "genfoundry.shapes.cli",
    "genfoundry.sana.cli",
    "genfoundry.sana.train_cli",
    "genfoundry.svdquant.cli",
    "genfoundry.vilau.cli",
    "genfoundry.lego.cli",
]


def command_group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The sub-app registered under `name` (e.g. `train`, `eval`), created if absent, so several
    systems can add commands to one group."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name, help=help_text)
    return group


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
