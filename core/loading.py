"""Loading models quietly in interactive commands (`chat`, `eval`).

transformers and huggingface_hub draw their own progress bars ("Loading weights", downloads)
between a command's output; here they are switched off, and a spinner of ours with the
elapsed time stands in while a model loads (only on a terminal: nothing in a log or a pipe).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


def silence_library_progress() -> None:
    """Turn off transformers' and huggingface_hub's progress bars for this process."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # pragma: no cover - comes with transformers
        return
    disable_progress_bars()


@contextmanager
def loading(what: str, console: Console | None = None) -> Iterator[None]:
    """Load something with the libraries' bars off and our spinner showing `what`."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    silence_library_progress()
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    columns = (SpinnerColumn(), TextColumn(f"loading {what}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task("load", total=None)
        yield
