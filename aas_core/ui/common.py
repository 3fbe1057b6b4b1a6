"""Glue shared by every tab: session lookup, progress/cancel wiring, errors as gr.Error, weights notices."""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import gradio as gr

from aas_core.errors import AASError, Cancelled
from aas_core.progress import ProgressFn
from aas_core.ui.config import AppConfig
from aas_core.ui.session import Session, Sessions

log = logging.getLogger("aas_core.ui")

VIDEO_TYPES = [".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"]
IMAGE_TYPES = [".jpg", ".jpeg", ".png", ".webp"]
GPU_QUEUE = "gpu"
"""Every model-running event shares this concurrency id: one at a time on the accelerator."""


@dataclass
class UIContext:
    """What every tab's `render` receives: settings, sessions and the states tabs share."""

    config: AppConfig
    sessions: Sessions
    selected_clip: gr.State
    """{path, start, end, label} of the clip picked in the library (or uploaded in Motion Structure)."""
    depth_ref: gr.State
    """{folder, ...settings} of the last depth sequence made in Motion Structure."""
    concepts_changed: gr.State
    """Bumped when a concept is trained, imported or deleted, so concept pickers refresh."""
    refreshers: list[tuple[Any, Callable[[], Any]]] = field(default_factory=list)
    """(component, fn) pairs re-evaluated on page load (e.g. weights notices after a download)."""
    loaders: list[tuple[Callable[..., Any], list[Any]]] = field(default_factory=list)
    """(handler, outputs) run for each visitor on page load (e.g. their saved concepts)."""

    def session(self, request: Optional[gr.Request]) -> Session:
        """The visitor's session (private folders in multi-user mode)."""
        return self.sessions.get(getattr(request, "session_hash", None))

    def cancel(self, request: gr.Request) -> None:
        """Cancel button handler: stop the visitor's running job at its next check.

        Deliberately not gradio's `cancels=`: that drops the event while its worker thread keeps the GPU busy;
        the token stops the engine itself, and the event then ends with the engine's "Cancelled" message.
        """
        self.session(request).cancel()
        gr.Info("Cancelling: the job stops at its next step; finished work is kept.")


def progress_fn(progress: gr.Progress) -> ProgressFn:
    """An engine ProgressFn driving a gr.Progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def _as_gr_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, Cancelled):
        return gr.Error(str(exc), title="Cancelled")
    if isinstance(exc, (AASError, ValueError, FileNotFoundError)):
        return gr.Error(str(exc))
    log.exception("unexpected error in the app")
    return gr.Error(f"{type(exc).__name__}: {exc}. This is a bug; please report it with the steps that led here.")


def action(config: AppConfig, gpu: bool = False, duration: int = 120) -> Callable[[Callable], Callable]:
    """Wrap an event handler: wait for tiny models, turn engine errors into gr.Error, run on ZeroGPU when present."""

    def wrap(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def run_gen(*args: Any, **kwargs: Any):
                try:
                    config.wait_ready()
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
                    raise _as_gr_error(exc) from exc

            wrapped = run_gen
        else:

            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any):
                try:
                    config.wait_ready()
                    return fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
                    raise _as_gr_error(exc) from exc

            wrapped = run
        return _zero_gpu(wrapped, duration) if gpu else wrapped

    return wrap


def _zero_gpu(fn: Callable, duration: int) -> Callable:
    """On Hugging Face ZeroGPU hardware, `spaces.GPU` attaches a GPU for the call; elsewhere a no-op."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def missing_weights(config: AppConfig, names: Iterable[str]) -> str:
    """Markdown naming the models a tab needs that are not in the weights folder, with the download command."""
    if config.tiny:
        return ""
    from aas_core.weights import status

    missing = [n for n in names if not status(n, config.weights_root).present]
    if not missing:
        return ""
    root = "" if str(config.weights_root) == str(_default_root()) else f" --dir {config.weights_root}"
    return (
        f"**Weights missing** for this tab: {', '.join(missing)}. Fetch them with\n\n"
        f"`python -m aas_core weights download {' '.join(missing)}{root}`\n\n"
        "or try the whole workflow without downloads: `python app.py --tiny`."
    )


def _default_root():
    from aas_core.weights import weights_dir

    return weights_dir()


def files_of(upload: Any) -> list[str]:
    """Paths of a gr.File value (None, one path, or a list)."""
    if not upload:
        return []
    items = upload if isinstance(upload, list) else [upload]
    return [getattr(item, "name", item) for item in items]
