"""Per-visitor folders (multi-user mode) and per-visitor cancel tokens (no gradio)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from aas_core.progress import CancelToken
from aas_core.registry import REGISTRY
from aas_core.ui.config import AppConfig


@dataclass
class Session:
    """Where one visitor's clips, concepts and outputs live, and their running job's cancel token."""

    id: str
    weights_root: Path
    """Concepts are stored under `<weights root>/concepts`: per visitor in multi-user mode (models are linked)."""
    library: Path
    uploads: Path
    outputs: Path
    private: bool
    """True when the folders belong to this visitor alone and are deleted when they leave."""
    folder: Optional[Path] = None
    token: CancelToken = field(default_factory=CancelToken)
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def depth_cache(self) -> Optional[Path]:
        """Depth cache folder: private to the visitor in multi-user mode, else the engine's default."""
        return self.folder / "cache" / "depth" if self.private and self.folder is not None else None

    def new_job(self) -> CancelToken:
        """A fresh token for the job about to start (a cancelled old one must not stop the new one)."""
        self.token = CancelToken()
        return self.token

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        self.token.cancel()

    def upload_dir(self, kind: str) -> Path:
        """A new folder for one batch of uploads (the engines index or train from folders)."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.uploads))


class Sessions:
    """Sessions by gradio session hash; in multi-user mode each gets private folders, removed on leave or after a TTL."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._root: Optional[Path] = None

    def _private_root(self) -> Path:
        if self._root is None:
            self.config.sessions_dir.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="run-", dir=self.config.sessions_dir))
            atexit.register(shutil.rmtree, self._root, True)
        return self._root

    def _make(self, key: str) -> Session:
        config = self.config
        if not config.multi_user:
            library = config.library
            if library is None:
                from aas_core.library import default_library

                library = default_library()
            outputs = config.outputs.absolute()
            return Session(key, config.weights_root, library, outputs / "uploads", outputs, private=False)
        folder = self._private_root() / key
        weights = folder / "weights"
        weights.mkdir(parents=True)
        for name in REGISTRY:
            # Models are shared read-only by link; the visitor's own concepts land in weights/concepts.
            (weights / name).symlink_to(config.weights_root / name, target_is_directory=True)
        return Session(key, weights, folder / "library", folder / "uploads", folder / "outputs", private=True, folder=folder)

    def get(self, key: Optional[str]) -> Session:
        """The session of a gradio session hash, created on first use."""
        key = key or "anonymous"
        if self.config.multi_user and not key.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad session id {key!r}")
        with self._lock:
            self._sweep()
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self._make(key)
            session.last_seen = time.monotonic()
            return session

    def close(self, key: Optional[str]) -> None:
        """Forget a session; its private folders are deleted."""
        with self._lock:
            session = self._sessions.pop(key or "anonymous", None)
        if session is not None:
            session.cancel()
            if session.private and session.folder is not None:
                shutil.rmtree(session.folder, ignore_errors=True)

    def _sweep(self) -> None:
        """Drop private sessions idle past the TTL (a closed tab whose unload never arrived)."""
        limit = time.monotonic() - self.config.session_ttl_s
        for key in [k for k, s in self._sessions.items() if s.private and s.last_seen < limit]:
            session = self._sessions.pop(key)
            session.cancel()
            if session.folder is not None:
                shutil.rmtree(session.folder, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)
