"""Entry point of the ``sbrt`` command (see docs: the CLI contract).

Every subcommand lives in its own module of this package and is added to the group here.
Errors follow the contract: bad input or bad options print one ``error: ...`` line on
standard error and exit with status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from sbrtstandards import __version__
from sbrtstandards.errors import InputError

# (module, attribute) of each subcommand; imported lazily so ``sbrt --help`` stays fast.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("sbrtstandards.cli.phantom_cmd", "phantom"),
    "demo": ("sbrtstandards.cli.demo_cmd", "demo"),
    "dvh": ("sbrtstandards.cli.dvh_cmd", "dvh"),
    "fourd": ("sbrtstandards.cli.fourd_cmd", "fourd"),
    "margin": ("sbrtstandards.cli.margin_cmd", "margin"),
    "protocols": ("sbrtstandards.cli.protocols_cmd", "protocols"),
    "bed": ("sbrtstandards.cli.bed_cmd", "bed"),
    "check": ("sbrtstandards.cli.check_cmd", "check"),
    "oars": ("sbrtstandards.cli.oars_cmd", "oars"),
    "tbi": ("sbrtstandards.cli.tbi_cmd", "tbi"),
    "machine-qa": ("sbrtstandards.cli.machine_qa_cmd", "machine_qa"),
    "qc-indicators": ("sbrtstandards.cli.qc_indicators_cmd", "qc_indicators"),
    "gamma": ("sbrtstandards.cli.gamma_cmd", "gamma"),
    "igrt": ("sbrtstandards.cli.igrt_cmd", "igrt"),
    "mu-check": ("sbrtstandards.cli.mu_check_cmd", "mu_check"),
    "compare": ("sbrtstandards.cli.compare_cmd", "compare"),
    "batch": ("sbrtstandards.cli.batch_cmd", "batch"),
    "teach": ("sbrtstandards.cli.teach_cmd", "teach"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[cmd_name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # subcommand not built yet in this version
                return None
            raise
        cmd: click.Command = getattr(mod, attr)
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sbrt")
def cli() -> None:
    """SBRT Standards: 4D-CT, margins, OARs, DVH and plan checks against the SBRT standards.

    Doses in Gy, volumes in cc, distances in mm, coordinates in DICOM LPS.
    Run `sbrt demo` for an end-to-end example on synthetic 4D-CT cases.
    """


def main(argv: list[str] | None = None) -> Any:
    """Run ``sbrt``; map input and usage errors to ``error: ...`` and exit status 2."""
    try:
        cli.main(args=argv, prog_name="sbrt", standalone_mode=False)
    except InputError as exc:
        _fail(str(exc))
    except click.exceptions.Abort:
        _fail("aborted")
    except click.exceptions.NoSuchOption as exc:
        _fail(exc.format_message())
    except click.ClickException as exc:
        _fail(exc.format_message())
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)


def _fail(message: str) -> None:
    first = " ".join(message.strip().split("\n")[0].split()) or "bad input"
    click.echo(f"error: {first}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
