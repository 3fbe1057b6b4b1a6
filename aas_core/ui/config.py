"""App settings from flags and environment (no gradio): weights, tiny preview, multi-user mode, limits."""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from aas_core.weights import status, weights_dir, write_tiny

TINY_MODELS: tuple[str, ...] = (
    "clip-vit-b-32",
    "depth-anything-v2-small",
    "sd15",
    "animatediff-motion-adapter-v1-5-3",
    "controlnet-depth-sd15",
    "wan2.1-vace-1.3b",
    "ip-adapter-sd15",
)
"""What the --tiny preview writes: one CLIP, the default depth estimator and both generation backends."""

TINY_LABEL = (
    "**Workflow preview**: this app runs on tiny random-weight models (`--tiny`). Every picture and video it makes is "
    "noise that only shows the workflow; download the real models (`python -m aas_core weights download`) for real results."
)
TINY_LABEL_WEB = (
    "**Workflow preview**: this app runs on tiny random-weight models. Every picture and video it makes is noise that "
    "only shows the workflow; real results need the app to run with the real models."
)


def tiny_label(multi_user: bool) -> str:
    """The preview banner: with the download command locally, without commands for web visitors."""
    return TINY_LABEL_WEB if multi_user else TINY_LABEL


_LIMIT_ENV = {
    "quota_mb": "AAS_QUOTA_MB",
    "quota_files": "AAS_QUOTA_FILES",
    "job_time_limit_s": "AAS_JOB_TIME_LIMIT_S",
    "api_session_ttl_s": "AAS_API_SESSION_TTL_S",
    "session_ttl_s": "AAS_SESSION_TTL_S",
}
"""Operator overrides of the per-visitor limits (whole numbers)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def app_cache_dir() -> Path:
    """Where the app keeps tiny models and sample media: $AAS_APP_DIR or the user cache folder."""
    env = os.environ.get("AAS_APP_DIR")
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("animate-a-story"))


@dataclass
class AppConfig:
    """Everything the UI needs to know about where things live and how much a visitor may upload."""

    weights_root: Path
    tiny: bool = False
    multi_user: bool = False
    cache_dir: Path = field(default_factory=app_cache_dir)
    library: Optional[Path] = None
    """Single-user clip library; None = `aas_core.library.default_library()` (or one beside tiny weights)."""
    outputs: Path = Path("outputs") / "app"
    sessions_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "aas-sessions")
    max_upload_mb: int = 200
    """Largest single upload (gradio refuses bigger files before they reach a handler)."""
    quota_mb: int = 500
    """All of one visitor's uploads together (multi-user mode)."""
    quota_files: int = 60
    """Number of files one visitor may upload in all (multi-user mode)."""
    max_clips: int = 20
    max_photos: int = 20
    min_photos: int = 3
    queue_size: int = 20
    session_ttl_s: int = 3 * 3600
    """A browser session idle this long is dropped even if its tab never said goodbye."""
    api_session_ttl_s: int = 15 * 60
    """A session that never loaded the page (plain HTTP calls) is dropped after this much idle time."""
    job_time_limit_s: int = 30 * 60
    """One queued job may run this long; then it is cancelled so the GPU queue moves on."""
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)
    _started: threading.Event = field(default_factory=threading.Event, repr=False)
    _error: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def from_env(cls, tiny: Optional[bool] = None, multi_user: Optional[bool] = None) -> "AppConfig":
        """Flags win over the environment: AAS_TINY, AAS_MULTI_USER (on by default inside a HF Space)."""
        tiny = _flag("AAS_TINY") if tiny is None else tiny
        if multi_user is None:
            multi_user = _flag("AAS_MULTI_USER") or bool(os.environ.get("SPACE_ID"))
        cache = app_cache_dir()
        limits = {name: int(os.environ[env]) for name, env in _LIMIT_ENV.items() if os.environ.get(env, "").strip().isdigit()}
        if tiny:
            root = Path(os.environ.get("AAS_TINY_DIR") or cache / "tiny-weights").expanduser().absolute()
            config = cls(weights_root=root, tiny=True, multi_user=multi_user, cache_dir=cache, library=root / "library", **limits)
        else:
            config = cls(weights_root=weights_dir(), multi_user=multi_user, cache_dir=cache, **limits)
            config._ready.set()
        return config

    @property
    def samples_dir(self) -> Path:
        """The read-only sample clips and photos shipped with the app (served to every visitor)."""
        from aas_core.ui.samples import SAMPLES_DIR

        return SAMPLES_DIR

    def prepare_async(self) -> None:
        """Write missing tiny models in the background, so the first page loads at once."""
        if self._ready.is_set() or self._started.is_set():
            return
        self._started.set()

        def work() -> None:
            try:
                todo = [name for name in TINY_MODELS if not status(name, self.weights_root).present]
                if todo:
                    write_tiny(todo, self.weights_root)
            except Exception as exc:  # noqa: BLE001 - reported to every later action instead of killing a thread silently
                self._error.append(f"could not write the tiny models into {self.weights_root}: {exc}")
            finally:
                self._ready.set()

        threading.Thread(target=work, name="aas-tiny-weights", daemon=True).start()

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until the tiny models exist (immediately when not in tiny mode)."""
        self.prepare_async()
        self._ready.wait(timeout)
        if self._error:
            from aas_core.errors import WeightsMissingError

            message = self._error.pop()
            # The next action tries again instead of the app staying broken until a restart.
            self._started.clear()
            self._ready.clear()
            raise WeightsMissingError(message + "; the next action will try again")

    @property
    def ready(self) -> bool:
        """Whether models are in place (tiny ones written)."""
        return self._ready.is_set()
