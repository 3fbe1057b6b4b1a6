"""Captions: import WebVid/Panda-style metadata (path or URL, caption, optional start/end), match query words
with SQLite FTS5 BM25, and fetch captioned URLs on demand when a hit is used."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from aas_core.errors import AASError, InputError, StorageError
from aas_core.fsutil import atomic_path, human_bytes
from aas_core.limits import MAX_CAPTION_CHARS, MAX_REMOTE_CLIP_BYTES
from aas_core.paths import base_name

PATH_COLUMNS = ("path", "url", "contenturl", "file", "video", "videoid")
CAPTION_COLUMNS = ("caption", "name", "text", "description")
FETCH_TIMEOUT_S = 30
"""Seconds one network read of a remote clip may wait."""
FETCH_DEADLINE_S = 600
"""Seconds a whole download may take: a server that trickles bytes cannot hold a job forever."""
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
"""Extensions a cache file keeps from its URL; any other becomes .mp4 (the content is probed either way)."""
RELATIVE_FLOOR = 0.1
"""Caption matches scoring under this share of the best BM25 are dropped (common-word-only matches)."""
MAX_REPORTED = 20
"""Bad rows named in the import report (the count covers all of them)."""


def is_url(path: str) -> bool:
    """Whether a caption row names a remote clip."""
    return path.startswith(("http://", "https://"))


def _column(names: list[str], wanted: tuple[str, ...], what: str, source: Path) -> Optional[str]:
    lowered = {n.lower(): n for n in names}
    for w in wanted:
        if w in lowered:
            return lowered[w]
    if what:
        raise InputError(f"{source.name} has no {what} column; name one of: {', '.join(wanted)} (found: {', '.join(names)})")
    return None


def _rows(source: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV or Parquet file as dicts, streamed."""
    suffix = source.suffix.lower()
    if suffix == ".csv":
        import csv

        with open(source, newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(source).iter_batches(batch_size=10_000):
            yield from batch.to_pylist()
    else:
        raise InputError(f"{source.name}: captions are read from a .csv or .parquet file")


def _seconds(value: Any, field: str, line: int) -> Optional[float]:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {line}: {field} {value!r} is not a number of seconds") from None
    if not number >= 0:
        raise ValueError(f"row {line}: {field} must be >= 0")
    return number


def import_captions(source: str | os.PathLike[str], library: Optional[str | os.PathLike[str]] = None) -> dict[str, Any]:
    """Add caption rows to the library (relative paths resolve beside the file); returns counts and bad rows."""
    from aas_core.library.store import LibraryStore, _transaction, path_bytes

    source = Path(source).expanduser().absolute()
    if not source.is_file():
        raise InputError(f"{source} does not exist; pass a .csv or .parquet file of captions")
    store = LibraryStore(library)
    rows = _rows(source)
    first = next(rows, None)
    if first is None:
        raise InputError(f"{source.name} holds no rows")
    names = list(first)
    path_col = _column(names, PATH_COLUMNS, "path or URL", source)
    caption_col = _column(names, CAPTION_COLUMNS, "caption", source)
    start_col, end_col = _column(names, ("start",), "", source), _column(names, ("end",), "", source)
    added, bad = 0, []
    with store.writer_lock():
        db = store.open_live() or store.create_first(None)
        try:
            batch: list[tuple[bytes, Optional[float], Optional[float], str]] = []

            def flush() -> None:
                with _transaction(db.db):
                    for key, start, end, _ in batch:
                        db.db.execute("DELETE FROM captions WHERE path=? AND start IS ? AND end IS ?", (key, start, end))
                    db.db.executemany("INSERT INTO captions(path, start, end, caption) VALUES (?, ?, ?, ?)", batch)
                batch.clear()

            for line, row in enumerate(_chain(first, rows), start=2):
                try:
                    where = str(row.get(path_col) or "").strip()
                    caption = str(row.get(caption_col) or "").strip()
                    if not where or not caption:
                        raise ValueError(f"row {line}: empty path or caption")
                    if len(caption) > MAX_CAPTION_CHARS:
                        raise ValueError(f"row {line}: caption is {len(caption)} characters; the limit is {MAX_CAPTION_CHARS}")
                    start = _seconds(row.get(start_col), "start", line) if start_col else None
                    end = _seconds(row.get(end_col), "end", line) if end_col else None
                    if start is not None and end is not None and end <= start:
                        raise ValueError(f"row {line}: end {end} is not after start {start}")
                    key = where.encode() if is_url(where) else path_bytes(source.parent / where)
                    batch.append((key, start, end, caption))
                    added += 1
                    if len(batch) >= 5000:
                        flush()
                except ValueError as exc:
                    bad.append(str(exc))
            if batch:
                flush()
            with _transaction(db.db):
                db.bump()
            total = int(db.db.execute("SELECT COUNT(*) FROM captions").fetchone()[0])
        finally:
            db.close()
    from aas_core.library import _forget

    _forget(store)
    return {"library": str(store.path), "added": added, "captions": total, "bad_rows": len(bad), "bad": bad[:MAX_REPORTED]}


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def fts_query(text: str) -> str:
    """A safe FTS5 MATCH expression: the query's words, each quoted, any of them."""
    words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def caption_candidates(db: Any, query: str, limit: int) -> list[dict[str, Any]]:
    """Shots (or captioned URLs) whose captions match the query's words, best BM25 first."""
    match = fts_query(query)
    if not match:
        return []
    rows = db.db.execute(
        "SELECT c.id, c.path, c.start, c.end, c.caption, -bm25(captions_fts) FROM captions_fts "
        "JOIN captions c ON c.id = captions_fts.rowid WHERE captions_fts MATCH ? ORDER BY bm25(captions_fts) LIMIT ?",
        (match, limit),
    ).fetchall()
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    # Matches on words nearly every caption holds ("a", "the") score near zero: they are no evidence.
    floor = RELATIVE_FLOOR * rows[0][5] if rows else 0.0
    for caption_id, key, start, end, caption, score in rows:
        if score < floor:
            break
        shots = db.db.execute(
            "SELECT s.id, s.start, s.end FROM shots s JOIN files f ON f.id = s.file_id WHERE f.path = ? "
            "AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.shot_id = s.id) ORDER BY s.start", (key,)
        ).fetchall()
        base = {"caption_id": caption_id, "path": os.fsdecode(key), "start": start, "end": end, "caption": caption, "bm25": float(score)}
        for shot_id, s_start, s_end in shots:
            overlaps = (start is None or s_end > start) and (end is None or s_start < end)
            if overlaps and shot_id not in seen:
                seen.add(shot_id)
                out.append({**base, "shot_id": shot_id})
        if not shots and is_url(base["path"]):
            out.append({**base, "shot_id": None})
    return out


def remote_cache(library: Optional[str | os.PathLike[str]] = None) -> Path:
    """Where fetched clips are kept: <library>/remote-cache."""
    from aas_core.library.store import LibraryStore

    return LibraryStore(library).path / "remote-cache"


def source_url(hit_or_url: Any) -> str:
    """Where a hit (ClipHit or its dict form) or path comes from: its URL when it is or was remote, else its path."""
    if isinstance(hit_or_url, dict):
        return str(hit_or_url.get("url") or hit_or_url.get("path") or "")
    return str(getattr(hit_or_url, "url", "") or getattr(hit_or_url, "path", hit_or_url))


def url_name(url: str) -> str:
    """The file name a URL's path ends with ('clip' when it has none), for messages; never used as a path."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rstrip("/").rsplit("/", 1)[-1]
    return base_name(name) if name else "clip"


def cached_path(url: str, library: Optional[str | os.PathLike[str]] = None) -> Path:
    """The cache file of a URL: a hash of the URL plus a known video extension (nothing else of the URL)."""
    suffix = Path(url_name(url)).suffix.lower()
    return remote_cache(library) / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}{suffix if suffix in VIDEO_SUFFIXES else '.mp4'}"


class _WebRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) addresses only (never file:, ftp: or data:)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError(f"redirected to a non-web address ({urllib.parse.urlsplit(newurl).scheme}:)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RemoteTooLargeError(InputError):
    """A web clip larger than the download limit (the caller may name a tighter limit of its own)."""


_FETCHING: dict[Path, tuple[threading.Lock, int]] = {}
"""Per cache file being fetched: its lock and how many callers hold or wait for it (gone at zero)."""
_FETCHING_LOCK = threading.Lock()


@contextmanager
def _one_fetch(target: Path) -> Iterator[None]:
    """Hold `target`'s download lock: one download per file at a time, and no entry left behind after."""
    with _FETCHING_LOCK:
        lock, users = _FETCHING.get(target, (threading.Lock(), 0))
        _FETCHING[target] = (lock, users + 1)
    try:
        with lock:
            yield
    finally:
        with _FETCHING_LOCK:
            lock, users = _FETCHING[target]
            if users == 1:
                del _FETCHING[target]
            else:
                _FETCHING[target] = (lock, users - 1)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, (TimeoutError, socket.timeout)) and str(reason) in ("", "timed out"):
        return "no answer within the time limit"
    return str(reason) or type(reason).__name__


def _download(url: str, tmp: Path, name: str, timeout: float, max_bytes: int) -> None:
    """Stream `url` into `tmp` within `max_bytes` and FETCH_DEADLINE_S (InputError past either)."""
    too_big = (f"{name} is a remote clip ({url}) of more than {human_bytes(max_bytes)}, the download limit; "
               "download it yourself, cut it shorter and import a local copy")
    began = time.monotonic()
    opener = urllib.request.build_opener(_WebRedirectsOnly)
    with opener.open(urllib.request.Request(url, headers={"User-Agent": "aas-core"}), timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise RemoteTooLargeError(too_big)
        written = 0
        with open(tmp, "wb") as fh:
            while chunk := response.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise RemoteTooLargeError(too_big)
                if time.monotonic() - began > FETCH_DEADLINE_S:
                    raise TimeoutError(f"the download took longer than {FETCH_DEADLINE_S} s")
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())


def fetch_remote(hit_or_url: Any, library: Optional[str | os.PathLike[str]] = None, timeout: float = FETCH_TIMEOUT_S,
                 max_bytes: int = MAX_REMOTE_CLIP_BYTES) -> str:
    """A local file for a hit (or URL): its own path when local, else the clip downloaded once into the cache.

    Only http(s) URLs; at most `max_bytes`; `timeout` seconds per network read; the download lands in a temp
    file that becomes the cache file only once it reads as a video. InputError (saying what to do) otherwise.
    """
    url = source_url(hit_or_url)
    if not is_url(url):
        return url
    name = url_name(url)
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise InputError(f"{url} names no host; fix the URL in the captions file and import it again")
    target = cached_path(url, library)
    if target.is_file():
        return str(target)
    with _one_fetch(target):  # a second caller waits here, then finds the cache file
        if target.is_file():
            return str(target)
        try:
            with atomic_path(target, suffix=target.suffix) as tmp:
                _download(url, tmp, name, timeout, max_bytes)
                _check_video(tmp, name, url)
        except (InputError, StorageError):
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            advice = ("check the URL in the captions file" if isinstance(exc, urllib.error.HTTPError)
                      else "this machine may be offline: connect to the internet")
            raise InputError(
                f"{name} is a remote clip ({url}) and could not be downloaded: {_reason(exc)}; {advice}, "
                "or download the clip yourself and import its caption with the local path"
            ) from exc
    return str(target)


def _check_video(tmp: Path, name: str, url: str) -> None:
    """InputError unless the downloaded file reads as a video (the temp file is then removed by the caller)."""
    from aas_core.video_io import probe

    try:
        probe(tmp)
    except (AASError, ValueError, OSError) as exc:
        raise InputError(f"{name} from {url} is not a video this app can read ({str(exc).replace(tmp.name, name)}); "
                         "check the URL in the captions file or import a local copy") from exc
