"""Small helpers shared by the API and the CLI: integer lists from text, a download progress bar."""

from __future__ import annotations

from ftmed_core.errors import ConfigError


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers like 0,1,2, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} must list at least one value, got {text!r}")
    return values


def progress_bar(description: str):
    """A rich progress callback `(done, total)` and the Progress context it lives in."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from rich.console import Console

    # On stderr, and off where that is no terminal: a transient bar there would leave only an empty line.
    console = Console(stderr=True)
    progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), transient=True, console=console, disable=not console.is_terminal)
    task = progress.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update
