"""Captions: import WebVid/Panda-style metadata (path or URL, caption, optional start/end), match query words
with SQLite FTS5 BM25, and fetch captioned URLs on demand when a hit is used."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

from aas_core.errors import InputError
from aas_core.fsutil import atomic_path
from aas_core.limits import MAX_CAPTION_CHARS

PATH_COLUMNS = ("path", "url", "contenturl", "file", "video", "videoid")
CAPTION_COLUMNS = ("caption", "name", "text", "description")
FETCH_TIMEOUT_S = 30
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


def fetch_remote(hit_or_url: Any, library: Optional[str | os.PathLike[str]] = None, timeout: float = FETCH_TIMEOUT_S) -> str:
    """A local file for a hit (or URL): its own path when local, else the clip downloaded once into the cache."""
    url = getattr(hit_or_url, "path", hit_or_url)
    if not is_url(str(url)):
        return str(url)
    suffix = Path(urllib.request.urlparse(url).path).suffix.lower() or ".mp4"
    target = remote_cache(library) / f"{hashlib.sha1(url.encode()).hexdigest()[:20]}{suffix[:8]}"
    if target.is_file():
        return str(target)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target, suffix=suffix[:8]) as tmp:
            with open(tmp, "wb") as fh:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(
            f"could not fetch {url} ({getattr(exc, 'reason', exc)}); this machine may be offline: download the clip "
            "yourself and import its caption with the local path instead"
        ) from exc
    return str(target)
