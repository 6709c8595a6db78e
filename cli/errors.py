"""Turning failures into one line on stderr and a non-zero exit code (never a traceback).

`FtmedGroup` is the top-level command class: it runs the command tree in non-standalone mode and maps
every expected failure -- usage errors, bad input (`FtmedError`), a full disk, Ctrl-C -- to one line and an
exit code. It sits in the command class rather than in `main()` so that `CliRunner` tests see exactly what
a user sees.
"""

from __future__ import annotations

import errno
import sys

import typer
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from ftmed_core.errors import FtmedError

USAGE_EXIT = 2


def fail(message: str, code: int = USAGE_EXIT) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


class FtmedGroup(TyperGroup):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted; finished runs are kept, rerun the same command to resume", 130)
        except click_exceptions.ClickException as exc:
            message = exc.format_message().replace("\n", " ")
            if isinstance(exc, click_exceptions.UsageError) and exc.ctx is not None:
                message += f" (see '{exc.ctx.command_path} --help')"
            fail(message, exc.exit_code)
        except FtmedError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                fail(f"disk full while writing {exc.filename or 'output'}; finished runs were not touched", 1)
            fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", 1)
        if result == 130:  # Typer turns Ctrl-C inside a command into Exit(130)
            fail("interrupted; finished runs are kept, rerun the same command to resume", 130)
        sys.exit(result if isinstance(result, int) else 0)
