"""What every tab shares: the UI context (sessions, visitor paths, job wrapper), progress with time left, messages.

Tabs never import each other; anything two tabs need lives here.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import gradio as gr

from aas_core.errors import AASError, Cancelled, InputError
from aas_core.paths import redact_paths, resolve_visitor_path, visitor_name
from aas_core.progress import ProgressFn
from aas_core.ui.config import AppConfig
from aas_core.ui.session import Session, Sessions

log = logging.getLogger("aas_core.ui")

VIDEO_TYPES = [".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"]
IMAGE_TYPES = [".jpg", ".jpeg", ".png", ".webp"]
AUDIO_TYPES = [".mp3", ".wav", ".m4a", ".ogg", ".flac"]
GPU_QUEUE = "gpu"
"""Every model-running event shares this concurrency id: one at a time on the accelerator."""
GENERATION_MODELS = ["sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15"]
"""What the default backend needs (named in weights notices of the Story and Compare tabs)."""
CANCELLED = "Cancelled - finished work kept."
_COMMAND_HINT = re.compile(r"[;,]?\s*(?:[\w'-]+\s+){0,3}?(?:(?:with|run|using|try)\s*:?\s*)?`?python3? -m aas_core(?:(?!\.\s)[^;)`\n])*`?")
"""A CLI hint inside an engine message ('; make one with: python -m aas_core ...'): local users only."""
NOTHING_RUNNING = "Nothing is running to cancel."


GpuDuration = Union[int, Callable[..., int]]
"""A ZeroGPU call budget: fixed seconds, or computed from the call's arguments."""


@dataclass
class UIContext:
    """What every tab's `render`/`listen` receives: settings, sessions and the states tabs share."""

    config: AppConfig
    sessions: Sessions
    selected_clip: Any
    """gr.State: {path, start, end, label} of the clip picked in the library (or uploaded in Motion Structure)."""
    depth_ref: Any
    """gr.State: {path, start, end, estimator, fit, speed, smoothing, frames, size} of the last depth preview."""
    concepts_changed: Any
    """gr.State bumped when a concept is trained, imported or deleted, so concept pickers refresh."""
    refreshers: list[tuple[Any, Callable[[], Any]]] = field(default_factory=list)
    """(component, fn) pairs re-evaluated on page load (e.g. weights notices after a download)."""
    loaders: list[tuple[Callable[..., Any], list[Any]]] = field(default_factory=list)
    """(handler, outputs) run for each visitor on page load (e.g. their saved concepts)."""

    def session(self, request: Optional[gr.Request]) -> Session:
        """The visitor's session (private folders in multi-user mode)."""
        return self.sessions.get(getattr(request, "session_hash", None))

    def resolve(self, session: Session, name: Any) -> Path:
        """A file the visitor named: guarded to their session and the samples in multi-user mode, as given locally."""
        if self.config.multi_user:
            assert session.folder is not None
            return resolve_visitor_path(name, session.folder, self.config.samples_dir)
        text = str(name or "").strip()
        path = Path(text).expanduser()
        if not path.is_absolute() and session.folder is not None and not path.exists():
            # Local mode: a bare upload or sample name works too.
            try:
                return resolve_visitor_path(text, session.folder, self.config.samples_dir)
            except AASError:
                pass
        return path.absolute()

    def show(self, session: Session, path: Any) -> str:
        """How a file is written in the UI: the visitor's short name (multi-user) or the full path (local)."""
        if self.config.multi_user and session.folder is not None:
            return visitor_name(path, session.folder, self.config.samples_dir)
        return str(path)

    def message(self, text: str) -> str:
        """A message fit for a web visitor (multi-user mode): no server paths, no command lines."""
        if not self.config.multi_user:
            return text
        return redact_paths(_COMMAND_HINT.sub("", text))

    def handler(self, fn: Callable, outputs: int, gpu: bool = False, duration: GpuDuration = 120) -> Callable:
        """Wrap a module-level handler `fn(ctx, ...)` for gradio (see `job_handler`)."""
        return job_handler(self, fn, outputs, gpu, duration)

    def cancel(self, request: gr.Request) -> None:
        """Cancel/Stop button: acknowledge at once; the engine stops at its next check and keeps finished work."""
        if self.session(request).cancel():
            gr.Info("Cancelling...")
        else:
            gr.Info(NOTHING_RUNNING)


def _request_of(args: Sequence[Any], kwargs: dict[str, Any]) -> Optional[gr.Request]:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)


def _skips(outputs: int) -> Any:
    return tuple(gr.skip() for _ in range(outputs)) if outputs != 1 else gr.skip()


def job_handler(ctx: UIContext, fn: Callable, outputs: int, gpu: bool = False, duration: GpuDuration = 120) -> Callable:
    """`fn(ctx, *inputs, request, progress)` as a gradio handler.

    Waits for tiny models; a cancelled job ends with a neutral notice and leaves every output as it was;
    a job past the time limit says so; other failures become one gr.Error whose text never shows a server
    path in multi-user mode; on ZeroGPU hardware the call gets a GPU.
    """
    config = ctx.config

    def fail(exc: BaseException, request: Optional[gr.Request]) -> Optional[gr.Error]:
        session = ctx.session(request) if request is not None else None
        if isinstance(exc, Cancelled):
            if session is not None and session.timed_out:
                gr.Warning(f"Stopped: one job may run {config.job_time_limit_s // 60} minutes here. Finished work kept.")
            else:
                gr.Info(CANCELLED)
            return None
        if isinstance(exc, gr.Error):
            return gr.Error(ctx.message(str(exc.message)), title=exc.title)
        if isinstance(exc, (AASError, ValueError, FileNotFoundError)):
            return gr.Error(ctx.message(str(exc)))
        log.exception("unexpected error in the app")
        return gr.Error(ctx.message(f"{type(exc).__name__}: {exc}. This is a bug; please report it with the steps that led here."))

    def finish(request: Optional[gr.Request]) -> None:
        if request is not None:
            ctx.session(request).end_job()

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any):
            request = _request_of(args, kwargs)
            try:
                config.wait_ready()
                yield from fn(ctx, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
                error = fail(exc, request)
                if error is not None:
                    raise error from exc
                yield _skips(outputs)
            finally:
                finish(request)
    else:

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any):
            request = _request_of(args, kwargs)
            try:
                config.wait_ready()
                return fn(ctx, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
                error = fail(exc, request)
                if error is not None:
                    raise error from exc
                return _skips(outputs)
            finally:
                finish(request)

    # gradio reads the signature for inputs, gr.Request and gr.Progress: hide the bound context.
    signature = inspect.signature(fn)
    wrapped.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
    return _zero_gpu(wrapped, duration) if gpu else wrapped


def _zero_gpu(fn: Callable, duration: GpuDuration) -> Callable:
    """On Hugging Face ZeroGPU hardware, `spaces.GPU` attaches a GPU for the call; elsewhere a no-op.

    `duration` is seconds, or a function of the handler's own arguments that returns them (ZeroGPU's dynamic
    duration), so short jobs queue sooner and long ones are not cut off.
    """
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def time_left(elapsed: float, fraction: float) -> str:
    """A short 'about N s left' estimate from the time spent and the fraction done ('' too early to tell)."""
    if fraction <= 0.02 or elapsed < 1.0 or fraction >= 1.0:
        return ""
    left = elapsed * (1.0 - fraction) / fraction
    if left < 60:
        return f"about {max(1, round(left))} s left"
    return f"about {round(left / 60)} min left"


def progress_fn(progress: gr.Progress, job: str = "") -> ProgressFn:
    """An engine ProgressFn driving the job's gr.Progress bar: the job's name, the step and the time left."""
    began = time.monotonic()

    def update(fraction: float, message: str) -> None:
        left = time_left(time.monotonic() - began, fraction)
        parts = [p for p in (job, message, left) if p]
        progress(fraction, desc=" · ".join(parts))

    return update


def missing_weights(config: AppConfig, names: Iterable[str]) -> str:
    """Markdown naming the models a tab needs that are not in the weights folder (with the command, locally)."""
    if config.tiny:
        return ""
    from aas_core.weights import status

    missing = [n for n in names if not status(n, config.weights_root).present]
    if not missing:
        return ""
    if config.multi_user:
        return (f"**Models missing** for this tab: {', '.join(missing)}. This app's operator has not installed them yet; "
                "the other tabs still work.")
    root = "" if str(config.weights_root) == str(_default_root()) else f" --weights {config.weights_root}"
    return (
        f"**Weights missing** for this tab: {', '.join(missing)}. Fetch them with\n\n"
        f"`python -m aas_core weights download {' '.join(missing)}{root}`\n\n"
        "or try the whole workflow without downloads: `python app.py --tiny`."
    )


def _default_root() -> Path:
    from aas_core.weights import weights_dir

    return weights_dir()


def files_of(upload: Any) -> list[str]:
    """Paths of a gr.File value (None, one path, or a list)."""
    if not upload:
        return []
    items = upload if isinstance(upload, list) else [upload]
    return [getattr(item, "name", item) for item in items]


def store_uploads(ctx: UIContext, session: Session, kind: str, upload: Any) -> list[Path]:
    """Copy a gr.File value into the visitor's session (within their total upload quota in multi-user mode)."""
    paths = files_of(upload)
    if not paths:
        return []
    quota = (ctx.config.quota_mb * 1_000_000, ctx.config.quota_files) if ctx.config.multi_user else (None, None)
    return session.store_uploads(kind, paths, *quota)


def fetch_web_clip(ctx: UIContext, session: Session, hit: dict[str, Any]) -> dict[str, Any]:
    """`fetch_hit` into the visitor's library; in multi-user mode a new download counts against their upload quota."""
    from aas_core.library import fetch_hit
    from aas_core.library.captions import RemoteTooLargeError, cached_path, url_name
    from aas_core.limits import MAX_REMOTE_CLIP_BYTES

    target = cached_path(str(hit["path"]), session.library) if hit.get("remote") else None
    if not ctx.config.multi_user or target is None or target.is_file():
        return fetch_hit(hit, session.library)  # a local clip, one already downloaded, or no quota to count
    quota = ctx.config.quota_mb * 1_000_000
    allowance = session.download_allowance(quota, ctx.config.quota_files)
    try:
        got = fetch_hit(hit, session.library, max_bytes=min(MAX_REMOTE_CLIP_BYTES, allowance))
    except RemoteTooLargeError:
        if allowance >= MAX_REMOTE_CLIP_BYTES:
            raise  # the download limit itself, not this visitor's quota
        raise InputError(f"{url_name(str(hit['path']))} is larger than what is left of your limit of {quota / 1e6:.0f} MB for uploads "
                         f"and downloaded web clips ({session.uploaded_bytes / 1e6:.1f} MB used); pick a shorter clip, "
                         "or reload the page to start a fresh session") from None
    session.count_download(target.stat().st_size)
    return got


def run_lock(buttons: Sequence[Any], stop: Any = None) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(lock, unlock) handlers: run buttons greyed out while a job runs; the Stop button shown only then."""

    def one_or_all(updates: list[Any]) -> Any:
        # gradio takes a bare value for a single output (a 1-tuple would become the button's label).
        return updates[0] if len(updates) == 1 else tuple(updates)

    def lock():
        extra = [gr.update(visible=True)] if stop is not None else []
        return one_or_all([gr.update(interactive=False) for _ in buttons] + extra)

    def unlock():
        extra = [gr.update(visible=False)] if stop is not None else []
        return one_or_all([gr.update(interactive=True) for _ in buttons] + extra)

    return lock, unlock


def wire_job(trigger: Any, fn: Callable, inputs: list[Any], outputs: list[Any], *, buttons: Sequence[Any], stop: Any = None,
             status: Any = None, api_name: Any = False, queue_id: Optional[str] = GPU_QUEUE) -> Any:
    """trigger -> lock the run buttons -> the job (progress shown on `status` only) -> unlock, whatever happened."""
    lock, unlock = run_lock(buttons, stop)
    switch = [*buttons, stop] if stop is not None else list(buttons)
    locked = trigger(lock, None, switch, queue=False, api_name=False)
    extra = {"show_progress_on": [status]} if status is not None else {}
    ran = locked.then(fn, inputs, outputs, concurrency_id=queue_id, api_name=api_name, **extra)
    ran.then(unlock, None, switch, queue=False, api_name=False)
    return ran


TITLE_PROGRESS_JS = """
() => {
  const base = document.title || "Animate-A-Story";
  setInterval(() => {
    const eta = document.querySelector(".progress-text, .eta-bar ~ .progress-text, .meta-text-center, .meta-text");
    const level = document.querySelector(".progress-level-inner");
    const busy = document.querySelector(".wrap.generating, .generating");
    let text = "";
    if (level && level.textContent.trim()) text = level.textContent.trim();
    else if (eta && eta.textContent.trim()) text = eta.textContent.trim();
    document.title = busy || text ? `⏳ ${text.slice(0, 60)} · ${base}` : base;
  }, 700);
}
"""
"""Shows the running job's progress in the browser tab title (visible from another tab)."""


def hit_details(hit: dict[str, Any], caption_chars: int = 80) -> str:
    """A search hit's motion class and amount and its caption (shortened), '' when the library has neither."""
    parts = []
    if hit.get("motion_class"):
        parts.append(f"{hit['motion_class']} motion {float(hit.get('motion') or 0.0):.2f}")
    caption = str(hit.get("caption") or "")
    if caption:
        parts.append(f"“{caption if len(caption) <= caption_chars else caption[:caption_chars - 1] + '…'}”")
    return " · ".join(parts)


def with_thumbnails(hits: list[dict[str, Any]], placeholder: Optional[str] = None) -> list[dict[str, Any]]:
    """The hits a gallery can show; the gallery's click index points into these. Remote caption hits have no
    thumbnail: they show `placeholder` (see `web_clip_thumbnail`), or are left out without one."""
    return [h if h.get("thumbnail") else {**h, "thumbnail": placeholder} for h in hits
            if h.get("thumbnail") or (placeholder and h.get("remote"))]


def web_clip_thumbnail(session: Session) -> str:
    """The gallery image of a web clip not downloaded yet (clicking it downloads it), made once in the visitor's outputs."""
    from PIL import Image, ImageDraw

    from aas_core.fsutil import atomic_path

    out = session.outputs / "thumbs" / "web-clip.png"
    if not out.is_file():
        image = Image.new("RGB", (160, 90), (48, 52, 64))
        ImageDraw.Draw(image).text((14, 38), "web clip: click to fetch", fill=(235, 235, 235))
        with atomic_path(out, suffix=".png") as tmp:
            image.save(tmp)
    return str(out)


def search_library(ctx: UIContext, session: Session, query: Optional[str], **options: Any) -> list[Any]:
    """`library.search` in the visitor's library; an empty library gets a message that points at the Clip Library tab."""
    from aas_core import library
    from aas_core.errors import InputError

    try:
        return library.search(query, library=session.library, weights_root=ctx.config.weights_root, **options)
    except InputError as exc:
        if not session.library.exists() or not any(session.library.iterdir()):
            raise InputError("your clip library is empty: upload clips or click 'Add the sample clips' in 1. Clip Library, "
                             "then search again") from exc
        raise
