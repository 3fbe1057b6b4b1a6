"""Atomic file and folder writes (a reader never sees a half-written file), and clear storage errors.

Every write of the engines goes through these helpers, so a full disk, a read-only folder or a missing
permission surfaces as one `StorageError` naming the folder and the space, never a raw traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from aas_core.errors import BusyError, StorageError

STORAGE_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""OS errors that mean "this folder cannot take the write": reported as StorageError."""
_RENAME_EXCHANGE = 2
"""renameat2(2) flag: swap two paths atomically (Linux 3.15+)."""


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB'."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _free_bytes(folder: Path) -> Optional[int]:
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def storage_error(
    exc: OSError, folder: str | os.PathLike[str], need_bytes: Optional[int] = None, written: Optional[int] = None
) -> StorageError:
    """The clear StorageError for an OSError of a write into `folder` (full, read-only, not permitted).

    `need_bytes`: the size of the whole write when known; `written`: how much went in before the disk filled.
    """
    folder = Path(folder)
    if isinstance(exc, StorageError):
        return exc
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(folder)
        have = f"{human_bytes(free)} free" if free is not None else "no space left"
        need = f", about {human_bytes(need_bytes)} needed" if need_bytes else (
            f", more than the {human_bytes(written)} that went in before it filled up needed" if written else ""
        )
        return StorageError(code, f"cannot write to {folder}: the disk is full ({have}{need}); free some space there or choose another folder")
    if code == errno.EROFS:
        return StorageError(code, f"cannot write to {folder}: it is on a read-only file system; choose another folder or make it writable")
    if code in (errno.EACCES, errno.EPERM):
        return StorageError(code, f"cannot write to {folder}: permission denied; choose a folder you can write to")
    return StorageError(code, f"cannot write to {folder}: {exc.strerror or exc}")


@contextlib.contextmanager
def storage_guard(folder: str | os.PathLike[str], need_bytes: Optional[int] = None) -> Iterator[None]:
    """Turn a full-disk / read-only / permission OSError inside the block into a StorageError naming `folder`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS and _about(exc, Path(folder)):
            raise storage_error(exc, folder, need_bytes) from exc
        raise


def _about(exc: OSError, folder: Path) -> bool:
    """Whether the error concerns `folder` (a permission error reading a source file elsewhere is not a storage fault)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or not exc.filename:
        return True
    try:
        return Path(os.fsdecode(exc.filename)).absolute().is_relative_to(folder.absolute())
    except (TypeError, ValueError):
        return True


def check_writable(folder: str | os.PathLike[str], need_bytes: int = 0) -> Path:
    """Make `folder` if needed and prove a file can be written there with `need_bytes` free; else StorageError."""
    folder = Path(folder)
    with storage_guard(folder, need_bytes):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    free = _free_bytes(folder)
    if need_bytes and free is not None and free < need_bytes:
        raise storage_error(OSError(errno.ENOSPC, "no space"), folder, need_bytes)
    return folder


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to disk, so they survive a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not supported here (e.g. Windows): the rename is still atomic, only less durable
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Atomically swap two existing paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):  # no libc handle (Windows) or no renameat2 (macOS, old glibc)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # file system or kernel without exchange: callers fall back to two renames
    raise OSError(code, os.strerror(code), os.fspath(a))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "", need_bytes: Optional[int] = None) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target` in one rename (then the folder is fsynced).

    `need_bytes` (the size about to be written, when known) goes into the full-disk message.
    """
    target = Path(target)
    with storage_guard(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, target)
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS or isinstance(exc, StorageError) or not _about(exc, target.parent):
                raise
            written = tmp_path.stat().st_size if tmp_path.exists() else None
            raise storage_error(exc, target.parent, need_bytes, written) from exc
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to `target` atomically (fsync, then rename)."""
    with atomic_path(target, need_bytes=len(data)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON to `target` atomically."""
    atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it becomes `target` (old one replaced).

    An existing `target` is swapped with the new folder in one atomic exchange where the system allows
    it, so readers listing the parent never miss it; the parent is fsynced after the rename.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    with storage_guard(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with storage_guard(target.parent):
            yield tmp
            fsync_dir(tmp)
            if not target.exists():
                os.replace(tmp, target)
            elif not exchange_paths(tmp, target):
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old folder


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike[str], busy: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (other processes and other threads alike), else BusyError(busy) at once."""
    from filelock import FileLock, Timeout

    lock_file = Path(lock_file)
    with storage_guard(lock_file.parent):
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        # A new lock object (own file descriptor) per call: a second holder in this process is refused too.
        lock = FileLock(str(lock_file), timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise BusyError(busy) from None
    try:
        yield
    finally:
        lock.release()


TEMP_NAME = re.compile(r"\..+\.([a-z0-9_]{8}(\.[A-Za-z0-9]{1,12})?|old)|\.stitch-[a-z0-9_]{8}")
"""Names of leftovers of atomic writes (`.NAME.XXXXXXXX[.ext]`, `.NAME.old`) and stitch scratch folders."""


def sweep_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove leftovers of interrupted atomic writes under `folder`; call only while holding the folder's writer lock."""
    removed = []
    for path in sorted(Path(folder).rglob(".*")) if Path(folder).is_dir() else []:
        if TEMP_NAME.fullmatch(path.name) and path.exists():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """Stable short digest of a JSON-serialisable object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
