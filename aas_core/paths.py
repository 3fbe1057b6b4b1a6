"""The visitor path guard: in a shared app, every file a visitor names must be their own upload or a sample.

Engines trust their callers (a CLI user owns their files); the app in multi-user mode passes every path a
visitor can type or load (shot clips, project clips, music, library, photos, compare and depth sources)
through `resolve_visitor_path` first. Symlinks are followed before the check, so a link inside the session
that points elsewhere is refused like the target itself. Refusals name only the file's base name, never a
server path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from aas_core.errors import InputError

UPLOADS = "uploads"
"""Sub-folder of a session folder holding the visitor's uploads; bare file names are looked up there."""
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?(?:/[^\s/'\"`,;:()<>\[\]|*?]+)+/?")


def base_name(name: object) -> str:
    """The last component of a path-like text (POSIX or Windows separators), for messages."""
    text = str(name).strip()
    return PureWindowsPath(PurePosixPath(text).name).name or text


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _by_name(name: str, folder: Path) -> list[Path]:
    """Files called `name` under `folder` (links not followed), newest first."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if name in files:
            found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.stat().st_mtime if p.exists() else 0.0, reverse=True)


def resolve_visitor_path(name: object, session_dir: str | os.PathLike[str], samples_dir: str | os.PathLike[str]) -> Path:
    """A file the visitor may use: inside `session_dir` or `samples_dir` after following links, else InputError.

    `name` may be a bare file name (`bikes.mp4`: looked up in the visitor's uploads, then the samples), a path
    relative to the session or sample folder, or an absolute path inside one of them.
    """
    text = str(name or "").strip()
    shown = base_name(text)
    if not text:
        raise InputError("no file named; upload a file or pick a sample first")
    bases = [Path(session_dir).resolve(), Path(samples_dir).resolve()]
    given = Path(text)
    candidates: list[Path] = []
    if given.is_absolute():
        candidates.append(given)
    else:
        candidates += [base / given for base in bases]
        if len(given.parts) == 1:
            candidates += _by_name(text, bases[0] / UPLOADS) + _by_name(text, bases[1])
    for candidate in candidates:
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real.is_file() and any(_inside(real, base) for base in bases):
            return real
    raise InputError(f"{shown}: not one of your uploads or the sample files; upload it here first, then use its file name")


def visitor_name(path: str | os.PathLike[str], session_dir: str | os.PathLike[str], samples_dir: str | os.PathLike[str]) -> str:
    """The short name a visitor sees and types for a file of theirs: the bare name when it resolves back to it."""
    real = Path(path).resolve()
    short = real.name
    try:
        if resolve_visitor_path(short, session_dir, samples_dir) == real:
            return short
    except InputError:
        pass
    for base in (Path(session_dir).resolve(), Path(samples_dir).resolve()):
        if _inside(real, base):
            return real.relative_to(base).as_posix()
    return short


def redact_paths(text: str) -> str:
    """`text` with every absolute path replaced by its base name (messages shown to visitors of a shared app)."""
    return _ABSOLUTE_PATH.sub(lambda m: base_name(m.group(0).rstrip("/")), text)
