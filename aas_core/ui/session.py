"""Per-visitor folders (multi-user mode), upload quotas, one job at a time with a time limit (no gradio)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from aas_core.errors import InputError
from aas_core.paths import UPLOADS, base_name
from aas_core.progress import CancelToken
from aas_core.registry import REGISTRY
from aas_core.ui.config import AppConfig


@dataclass
class Session:
    """Where one visitor's clips, concepts and outputs live, their quota use and their running job."""

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
    browser: bool = False
    """True once a page loaded for this session (a closing tab says goodbye); plain HTTP sessions never do."""
    running: Optional[str] = None
    """Name of the job running now, None when idle."""
    timed_out: bool = False
    """True when the running job was stopped by the per-job time limit."""
    uploaded_bytes: int = 0
    uploaded_files: int = 0
    _timer: Optional[threading.Timer] = field(default=None, repr=False)

    @property
    def depth_cache(self) -> Optional[Path]:
        """Depth cache folder: private to the visitor in multi-user mode, else the engine's default."""
        return self.folder / "cache" / "depth" if self.private and self.folder is not None else None

    def new_job(self, name: str = "job", time_limit_s: Optional[float] = None) -> CancelToken:
        """A fresh token for the job about to start, cancelled by itself after `time_limit_s` seconds."""
        self.end_job()
        self.token, self.running, self.timed_out = CancelToken(), name, False
        if time_limit_s:
            token = self.token

            def expire() -> None:
                if self.token is token and self.running:
                    self.timed_out = True
                    token.cancel()

            self._timer = threading.Timer(time_limit_s, expire)
            self._timer.daemon = True
            self._timer.start()
        return self.token

    def end_job(self) -> None:
        """The job finished (or failed): stop its timer; the session counts as idle from now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.running = None
        self.last_seen = time.monotonic()

    def cancel(self) -> bool:
        """Ask the running job to stop at its next check; False when nothing runs."""
        if self.running is None:
            return False
        self.token.cancel()
        return True

    def upload_dir(self, kind: str) -> Path:
        """A new folder for one batch of uploads (the engines index or train from folders)."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.uploads))

    def store_uploads(self, kind: str, paths: Iterable[str | Path], quota_bytes: Optional[int], quota_files: Optional[int]) -> list[Path]:
        """Copy uploaded files into a new folder of this session, within the visitor's total quota."""
        sources = [Path(p) for p in paths]
        size = sum(p.stat().st_size for p in sources)
        if quota_files is not None and self.uploaded_files + len(sources) > quota_files:
            raise InputError(f"{len(sources)} more files would pass your limit of {quota_files} uploaded files "
                             f"({self.uploaded_files} used); reload the page to start a fresh session")
        if quota_bytes is not None and self.uploaded_bytes + size > quota_bytes:
            raise InputError(f"these files ({size / 1e6:.1f} MB) would pass your upload limit of {quota_bytes / 1e6:.0f} MB "
                             f"({self.uploaded_bytes / 1e6:.1f} MB used); upload fewer or smaller files, or reload the page for a fresh session")
        target = self.upload_dir(kind)
        out = []
        for source in sources:
            dest = target / base_name(source.name)
            shutil.copyfile(source, dest)
            out.append(dest)
        self.uploaded_bytes += size
        self.uploaded_files += len(sources)
        return out

    def download_allowance(self, quota_bytes: int, quota_files: int) -> int:
        """Bytes one more web clip download may take within the visitor's quota; InputError when it is used up."""
        if self.uploaded_files + 1 > quota_files:
            raise InputError(f"downloading this web clip would pass your limit of {quota_files} files ({self.uploaded_files} used); "
                             "reload the page to start a fresh session")
        if self.uploaded_bytes >= quota_bytes:
            raise InputError(f"your limit of {quota_bytes / 1e6:.0f} MB for uploads and downloaded web clips is used up; "
                             "reload the page to start a fresh session")
        return quota_bytes - self.uploaded_bytes

    def count_download(self, size: int) -> None:
        """A web clip downloaded into this visitor's library counts like an upload."""
        self.uploaded_bytes += size
        self.uploaded_files += 1


class Sessions:
    """Sessions by gradio session hash; in multi-user mode each gets private folders, removed on leave or when idle."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._root: Optional[Path] = None
        self._sweeper: Optional[threading.Thread] = None
        self._stop = threading.Event()

    @property
    def root(self) -> Optional[Path]:
        """This app run's folder of session folders (None until the first private session)."""
        return self._root

    def _private_root(self) -> Path:
        if self._root is None:
            self.config.sessions_dir.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="run-", dir=self.config.sessions_dir))
        return self._root

    def _make(self, key: str) -> Session:
        config = self.config
        if not config.multi_user:
            library = config.library
            if library is None:
                from aas_core.library import default_library

                library = default_library()
            outputs = config.outputs.absolute()
            return Session(key, config.weights_root, library, outputs / UPLOADS, outputs, private=False, folder=outputs)
        folder = self._private_root() / key
        weights = folder / "weights"
        weights.mkdir(parents=True)
        for name in REGISTRY:
            # Models are shared read-only by link; the visitor's own concepts land in weights/concepts.
            (weights / name).symlink_to(config.weights_root / name, target_is_directory=True)
        return Session(key, weights, folder / "library", folder / UPLOADS, folder / "outputs", private=True, folder=folder)

    def get(self, key: Optional[str], browser: bool = False) -> Session:
        """The session of a gradio session hash, created on first use (`browser`: a page loaded for it)."""
        key = key or "anonymous"
        if self.config.multi_user and not key.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad session id {key!r}")
        with self._lock:
            self._sweep()
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self._make(key)
            session.last_seen = time.monotonic()
            session.browser = session.browser or browser
        if self.config.multi_user:
            self._start_sweeper()
        return session

    def close(self, key: Optional[str]) -> None:
        """Forget a session; its job is cancelled and its private folders deleted."""
        with self._lock:
            session = self._sessions.pop(key or "anonymous", None)
        if session is not None:
            self._drop(session)

    def close_all(self) -> None:
        """Cancel every job and delete every private folder of this app run (shutdown)."""
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            self._drop(session)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    @staticmethod
    def _drop(session: Session) -> None:
        session.cancel()
        session.end_job()
        if session.private and session.folder is not None:
            shutil.rmtree(session.folder, ignore_errors=True)

    def _sweep(self) -> None:
        """Drop idle private sessions: plain-HTTP ones after a short time, browser ones after the long TTL."""
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            ttl = self.config.session_ttl_s if session.browser else self.config.api_session_ttl_s
            if session.private and session.running is None and now - session.last_seen > ttl:
                self._drop(self._sessions.pop(key))

    def sweep(self) -> None:
        """Drop idle sessions now."""
        with self._lock:
            self._sweep()

    def _start_sweeper(self) -> None:
        """A background sweep, so sessions of visitors who never come back go without a later request."""
        if self._sweeper is not None:
            return
        every = max(1.0, min(60.0, self.config.api_session_ttl_s / 4))

        def loop() -> None:
            while not self._stop.wait(every):
                self.sweep()

        self._sweeper = threading.Thread(target=loop, name="aas-session-sweeper", daemon=True)
        self._sweeper.start()

    def __len__(self) -> int:
        return len(self._sessions)
