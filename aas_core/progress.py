"""Progress reporting and cancellation shared by every long-running engine."""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from aas_core.errors import Cancelled

ProgressFn = Callable[[float, str], None]
"""Called with (fraction done in [0, 1], short message)."""

T = TypeVar("T")


class CancelToken:
    """A flag a UI or signal handler sets; engines call `check()` between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user; finished work was kept")


def report(on_progress: Optional[ProgressFn], fraction: float, message: str) -> None:
    """Forward a progress update if anyone listens."""
    if on_progress is not None:
        on_progress(min(max(fraction, 0.0), 1.0), message)


def tqdm_progress(desc: str, disable: bool = False) -> tuple[ProgressFn, Callable[[], None]]:
    """A ProgressFn that drives a tqdm bar on stderr, and a function closing it."""
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=desc, disable=disable, bar_format="{l_bar}{bar}| {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = int(fraction * 1000)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return update, bar.close


def checked(items: Iterable[T], cancel: Optional[CancelToken]) -> Iterator[T]:
    """Yield items, checking for cancellation before each."""
    for item in items:
        if cancel is not None:
            cancel.check()
        yield item
