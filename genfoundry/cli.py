"""The one `genfoundry` command. Each system registers its own sub-commands from `<system>/cli.py`."""

from __future__ import annotations

import importlib
import traceback

import typer
from typer.core import TyperGroup

try:  # typer >= 0.25 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as click_exceptions

from genfoundry import __version__
from genfoundry.errors import GenfoundryError, one_line

_DEBUG_KEY = "genfoundry.debug"


class _Root(TyperGroup):
    """The root command group: the one error path of every command.

    The project's own errors (`GenfoundryError`) and click's usage errors of a sub-command become one
    line on stderr, ``error: <what was wrong and what was expected>``, and exit code 2; with
    ``--debug`` the traceback is printed first. Anything else is a bug and propagates unchanged."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except (GenfoundryError, click_exceptions.UsageError) as err:
            if ctx.meta.get(_DEBUG_KEY):
                traceback.print_exc()
            if isinstance(err, click_exceptions.UsageError):
                where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
                message = where + " ".join(err.format_message().split())
            else:
                message = one_line(err)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Root,
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
    "genfoundry.serve.cli",
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
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error, not just its one-line message."),
) -> None:
    """Efficient generative AI from model to silicon."""
    ctx.meta[_DEBUG_KEY] = debug


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
