"""Writer stage and on-disk library: SQLite metadata, float16 vector segments, a faiss index updated incrementally.

Layout of a library folder:
  CURRENT                   the name of the live generation (swapped in one rename, only by --reindex)
  gen-NNNNNN/library.db     SQLite (WAL): meta, files, shots, thumbs (JPEG blobs), pending vectors,
                            captions (+ FTS5), segments and index files in use
  gen-NNNNNN/vectors/       seg-*.npy float16 rows + seg-*.ids.npy shot ids; append-only, memory-mapped
  gen-NNNNNN/index/         trained-*.faiss (centroids only), base-*.faiss, delta-*.faiss (IVF kinds only)
  gen-NNNNNN/thumbs/        a cache: thumbnails of shots that were hits, written from the table on demand
Each indexed file is one transaction (its shots wait as "pending"); publishing writes the new vector and
index files first and then names them in one transaction, so killing a run at any moment leaves the
previous state searchable and the finished files ready for the next run. Files the database does not
name are leftovers of a killed run; the next writer removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from aas_core.errors import InputError
from aas_core.fsutil import atomic_write_bytes
from aas_core.library.reader import FoundFile
from aas_core.library.vector_index import (
    GROWTH_FACTOR,
    MAX_DELTAS,
    REFINE_FACTOR,
    REFINE_MIN,
    IndexType,
    VectorSegment,
    add_preassigned,
    add_vectors,
    assign_lists,
    choose_index_type,
    configure_search,
    exact_search,
    iter_chunks,
    ivf_search,
    load_index,
    merge_into,
    rerank,
    reserve_lists,
    save_index,
    train_index,
    train_size,
    write_segment,
)

FORMAT_VERSION = 2
CURRENT = "CURRENT"
DB_NAME = "library.db"
SHOT_COLUMNS = ("id", "start", "end", "fps", "width", "height", "frames_sampled", "motion", "camera_motion", "subject_motion")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
  id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE, size INTEGER, mtime_ns INTEGER,
  status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', info TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS shots(
  id INTEGER PRIMARY KEY AUTOINCREMENT, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
  start REAL NOT NULL, end REAL NOT NULL, fps REAL, width INTEGER, height INTEGER, frames_sampled INTEGER,
  motion REAL NOT NULL DEFAULT 0, camera_motion REAL NOT NULL DEFAULT 0, subject_motion REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS shots_by_file ON shots(file_id);
CREATE TABLE IF NOT EXISTS thumbs(shot_id INTEGER PRIMARY KEY REFERENCES shots(id) ON DELETE CASCADE, jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending(shot_id INTEGER PRIMARY KEY REFERENCES shots(id) ON DELETE CASCADE, vec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS segments(name TEXT PRIMARY KEY, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS index_files(name TEXT PRIMARY KEY, role TEXT NOT NULL, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS captions(
  id INTEGER PRIMARY KEY, path BLOB NOT NULL, start REAL, end REAL, caption TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS captions_by_path ON captions(path);
CREATE VIRTUAL TABLE IF NOT EXISTS captions_fts USING fts5(caption, content='captions', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS captions_ai AFTER INSERT ON captions BEGIN
  INSERT INTO captions_fts(rowid, caption) VALUES (new.id, new.caption); END;
CREATE TRIGGER IF NOT EXISTS captions_ad AFTER DELETE ON captions BEGIN
  INSERT INTO captions_fts(captions_fts, rowid, caption) VALUES ('delete', old.id, old.caption); END;
"""


def default_library() -> Path:
    """The library folder used when none is given: $AAS_LIBRARY or ./library."""
    return Path(os.environ.get("AAS_LIBRARY") or "library").expanduser().absolute()


def path_bytes(path: str | os.PathLike[str]) -> bytes:
    """A path as the bytes the OS holds: any file name (Latin-1 included) round-trips."""
    return os.fsencode(os.path.abspath(path))


@dataclass(frozen=True)
class ModelStamp:
    """Which embedder made the vectors; a library only mixes vectors of one stamp."""

    name: str
    fingerprint: str
    embed_dim: int
    tiny: bool


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process kill
    db.execute("PRAGMA foreign_keys=ON")
    return db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class LibraryDB:
    """One generation of a library: its database, vector segments and index files."""

    def __init__(self, folder: Path, create: bool = False) -> None:
        self.folder = folder
        if create:
            (folder / "vectors").mkdir(parents=True, exist_ok=True)
            (folder / "index").mkdir(exist_ok=True)
        elif not (folder / DB_NAME).is_file():
            raise InputError(f"the library generation {folder} is missing its database; rebuild it with --reindex")
        self.db = _connect(folder / DB_NAME)
        self.lock = threading.Lock()
        if create:
            self.db.executescript(SCHEMA)
        self._loaded_version = -1
        self._segments: list[VectorSegment] = []
        self._base: Any = None
        self._deltas: list[Any] = []

    # --- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A JSON value from the meta table."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value in the meta table (inside the caller's transaction, if any)."""
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def bump(self) -> None:
        """Mark a new searchable state (inside the caller's transaction): readers reload, caches keyed on it expire."""
        self.set_meta("version", int(self.get_meta("version", 0)) + 1)
        self.set_meta("updated", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z")

    @property
    def stamp(self) -> Optional[ModelStamp]:
        """The embedder these vectors came from (None before the first file)."""
        m = self.get_meta("model")
        return ModelStamp(m["name"], m["fingerprint"], int(m["embed_dim"]), bool(m.get("tiny"))) if m else None

    def init_meta(self, stamp: Optional[ModelStamp]) -> None:
        """Record the format and model of a new generation (no model yet for a captions-only library)."""
        with _transaction(self.db):
            if self.get_meta("format") is None:
                self.set_meta("format", FORMAT_VERSION)
                self.set_meta("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                self.set_meta("version", 0)
                self.set_meta("index_type", "exact")
                self.set_meta("dead", 0)
                self.set_meta("roots", [])
            if stamp is not None:
                self.set_meta("model", stamp.__dict__)

    # --- files (writer stage) ----------------------------------------------------------------------
    def file_record(self, found: FoundFile) -> Optional[dict[str, Any]]:
        """The stored record of a file if it matches the file's current size and mtime."""
        row = self.db.execute("SELECT id, status, reason, size, mtime_ns FROM files WHERE path=?", (path_bytes(found.path),)).fetchone()
        if row is None or row[3] != found.size or row[4] != found.mtime_ns:
            return None
        return {"id": row[0], "status": row[1], "reason": row[2]}

    def _drop_file(self, key: bytes) -> int:
        """Delete a file's rows (its shots' vectors become dead ids until a compact); returns shots dropped."""
        row = self.db.execute("SELECT id FROM files WHERE path=?", (key,)).fetchone()
        if row is None:
            return 0
        published = self.db.execute(
            "SELECT COUNT(*) FROM shots s WHERE s.file_id=? AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.shot_id=s.id)", (row[0],)
        ).fetchone()[0]
        self.db.execute("DELETE FROM files WHERE id=?", (row[0],))
        self.set_meta("dead", int(self.get_meta("dead", 0)) + published)
        return published

    def add_file(self, found: FoundFile, shots: Sequence[dict[str, Any]], vectors: np.ndarray, thumbs: Sequence[bytes], info: dict) -> None:
        """Record one indexed file, its shots, thumbnails and (pending) vectors in one transaction."""
        key = path_bytes(found.path)
        vectors = np.asarray(vectors, np.float16)
        with _transaction(self.db):
            self._drop_file(key)
            file_id = self.db.execute(
                "INSERT INTO files(path, size, mtime_ns, status, info) VALUES (?, ?, ?, 'indexed', ?)",
                (key, found.size, found.mtime_ns, json.dumps(info)),
            ).lastrowid
            for shot, vector, jpeg in zip(shots, vectors, thumbs):
                shot_id = self.db.execute(
                    "INSERT INTO shots(file_id, start, end, fps, width, height, frames_sampled, motion, camera_motion, subject_motion) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (file_id, *(shot.get(c, 0) for c in SHOT_COLUMNS[1:])),
                ).lastrowid
                self.db.execute("INSERT INTO thumbs(shot_id, jpeg) VALUES (?, ?)", (shot_id, jpeg))
                self.db.execute("INSERT INTO pending(shot_id, vec) VALUES (?, ?)", (shot_id, vector.tobytes()))

    def bulk_add(self, files: Sequence[tuple[str, Sequence[dict[str, Any]]]], vectors: np.ndarray) -> None:
        """Add many files' shots with precomputed vectors (e.g. released embeddings) straight into a segment.

        One transaction: rows, then the segment file, then its record; an IVF index gets a delta. Thumbnails
        are left out (there are no frames); hits of these shots show none.
        """
        vectors = np.asarray(vectors, np.float16)
        with _transaction(self.db):
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name='shots'").fetchone()
            next_id = max(row[0] if row else 0, self.db.execute("SELECT COALESCE(MAX(id), 0) FROM shots").fetchone()[0]) + 1
            ids: list[int] = []
            for path, shots in files:
                key = path_bytes(path)
                self._drop_file(key)
                file_id = self.db.execute("INSERT INTO files(path, size, mtime_ns, status) VALUES (?, 0, 0, 'indexed')", (key,)).lastrowid
                mine = list(range(next_id, next_id + len(shots)))
                next_id += len(shots)
                self.db.executemany(
                    "INSERT INTO shots(id, file_id, start, end, fps, width, height, frames_sampled, motion, camera_motion, subject_motion) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(i, file_id, *(shot.get(c, 0) for c in SHOT_COLUMNS[1:])) for i, shot in zip(mine, shots)],
                )
                ids.extend(mine)
            ids_array = np.asarray(ids, np.int64)
            if len(ids_array) != len(vectors):
                raise ValueError(f"{len(ids_array)} shots but {len(vectors)} vectors")
            name = f"seg-{int(ids_array[0]):012d}-{uuid.uuid4().hex[:8]}"
            write_segment(self.folder / "vectors" / f"{name}.npy", ids_array, vectors)
            self.db.execute("INSERT INTO segments(name, rows) VALUES (?, ?)", (name, len(ids_array)))
            if self.get_meta("index_type", "exact") != "exact":
                rows = self._add_delta(self._index_rows(), ids_array, vectors.astype(np.float32))
                self.db.execute("DELETE FROM index_files")
                self.db.executemany("INSERT INTO index_files(name, role, rows) VALUES (?, ?, ?)", rows)
            self.bump()

    def add_skip(self, found: FoundFile, reason: str) -> None:
        """Record that a file was skipped and why (retried only if the file changes)."""
        with _transaction(self.db):
            self._drop_file(path_bytes(found.path))
            self.db.execute(
                "INSERT INTO files(path, size, mtime_ns, status, reason) VALUES (?, ?, ?, 'skipped', ?)",
                (path_bytes(found.path), found.size, found.mtime_ns, reason),
            )

    def remove_missing(self, folder: Path, present: set[bytes]) -> int:
        """Forget files under `folder` that are gone from it; returns how many."""
        prefix = path_bytes(folder).rstrip(b"/") + b"/"
        gone = [p for (p,) in self.db.execute("SELECT path FROM files WHERE status != 'remote'") if p.startswith(prefix) and p not in present]
        with _transaction(self.db):
            for key in gone:
                self._drop_file(key)
        return len(gone)

    def skipped(self) -> list[dict[str, str]]:
        """Every skipped file with its reason."""
        return [{"path": os.fsdecode(p), "reason": r} for p, r in self.db.execute("SELECT path, reason FROM files WHERE status='skipped' ORDER BY path")]

    def counts(self) -> tuple[int, int]:
        """(files with searchable shots, searchable shots)."""
        shots, files = self.db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT file_id) FROM shots s WHERE NOT EXISTS (SELECT 1 FROM pending p WHERE p.shot_id=s.id)"
        ).fetchone()
        return files, shots

    # --- publish / compact ------------------------------------------------------------------------
    def _index_rows(self) -> list[tuple[str, str, int]]:
        return list(self.db.execute("SELECT name, role, rows FROM index_files ORDER BY name"))

    def _segment_names(self) -> list[str]:
        return [n for (n,) in self.db.execute("SELECT name FROM segments ORDER BY name")]

    def stored_vectors(self) -> int:
        """Vectors in the segments (dead ones included)."""
        return int(self.db.execute("SELECT COALESCE(SUM(rows), 0) FROM segments").fetchone()[0])

    def publish(self, index_type: Optional[IndexType] = None, memory_budget: Optional[int] = None) -> dict[str, Any]:
        """Make pending shots searchable: O(new) segment + index delta; compacts when growth calls for it."""
        rows = list(self.db.execute("SELECT shot_id, vec FROM pending ORDER BY shot_id"))
        stamp = self.stamp
        new_files: list[tuple[str, str, int]] = []
        segment = None
        if rows and stamp is not None:
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float16).reshape(len(rows), stamp.embed_dim)
            segment = (f"seg-{int(ids[0]):012d}-{uuid.uuid4().hex[:8]}", len(rows))
            write_segment(self.folder / "vectors" / f"{segment[0]}.npy", ids, vectors)
        total = self.stored_vectors() + (segment[1] if segment else 0) - int(self.get_meta("dead", 0))
        dim = stamp.embed_dim if stamp else 512
        want = index_type or choose_index_type(total, dim, memory_budget)
        current = self.get_meta("index_type", "exact")
        trained_on = int(self.get_meta("trained_count", 0))
        index_rows = self._index_rows()
        if want != current or (want != "exact" and total > GROWTH_FACTOR * max(trained_on, 1)):
            return self._compact(want, extra_segment=segment)
        if want != "exact" and segment is not None:
            index_rows = self._add_delta(index_rows, ids, vectors.astype(np.float32))
            new_files = index_rows
        with _transaction(self.db):
            if segment is not None:
                self.db.execute("INSERT INTO segments(name, rows) VALUES (?, ?)", segment)
            if new_files:
                self.db.execute("DELETE FROM index_files")
                self.db.executemany("INSERT INTO index_files(name, role, rows) VALUES (?, ?, ?)", new_files)
            self.db.execute("DELETE FROM pending")
            self.bump()
        return self.summary()

    def _add_delta(self, index_rows: list[tuple[str, str, int]], ids: np.ndarray, vectors: np.ndarray) -> list[tuple[str, str, int]]:
        """A new delta index sharing the trained centroids; past MAX_DELTAS the deltas merge into one."""
        trained = next(n for n, role, _ in index_rows if role == "trained")
        delta = load_index(self.folder / "index" / trained, mmap=False)
        add_vectors(delta, vectors, ids)
        deltas = [(n, r) for n, role, r in index_rows if role == "delta"]
        if len(deltas) >= MAX_DELTAS:
            merge_into(delta, [load_index(self.folder / "index" / n, mmap=False) for n, _ in deltas])
            deltas = []
        name = f"delta-{uuid.uuid4().hex[:12]}.faiss"
        save_index(delta, self.folder / "index" / name)
        keep = [row for row in index_rows if row[1] != "delta"]
        return keep + [(n, "delta", r) for n, r in deltas] + [(name, "delta", int(delta.ntotal))]

    def compact(self, index_type: Optional[IndexType] = None, memory_budget: Optional[int] = None) -> dict[str, Any]:
        """Retrain the index on every live vector (dead ones dropped), choosing its kind under the memory budget."""
        total = self.stored_vectors() - int(self.get_meta("dead", 0))
        stamp = self.stamp
        want = index_type or choose_index_type(total, stamp.embed_dim if stamp else 512, memory_budget)
        return self._compact(want, extra_segment=None)

    def _compact(self, kind: IndexType, extra_segment: Optional[tuple[str, int]]) -> dict[str, Any]:
        segments = self._open_segments(self._segment_names() + ([extra_segment[0]] if extra_segment else []))
        # Shots of removed files are gone from the table: their vectors stay in the segments but not in the index.
        live = np.fromiter((i for (i,) in self.db.execute("SELECT id FROM shots ORDER BY id")), np.int64)
        index_rows: list[tuple[str, str, int]] = []
        if kind != "exact":
            sample = _sample_vectors(segments, live, train_size(len(live)))
            trained = train_index(kind, sample, len(live))
            del sample
            trained_name = f"trained-{uuid.uuid4().hex[:12]}.faiss"
            save_index(trained, self.folder / "index" / trained_name)
            # Two passes: assign every vector to its list, reserve the lists, then add the codes (no 2x growth).
            lists = [assign_lists(trained, vectors[_member(ids, live)]) for ids, vectors in iter_chunks(segments, once=True)]
            reserve_lists(trained, np.concatenate(lists) if lists else np.zeros(0, np.int64))
            for (ids, vectors), assigned in zip(iter_chunks(segments, once=True), lists):
                keep = _member(ids, live)
                if keep.any():
                    add_preassigned(trained, vectors[keep], ids[keep], assigned)
            base_name = f"base-{uuid.uuid4().hex[:12]}.faiss"
            save_index(trained, self.folder / "index" / base_name)
            index_rows = [(trained_name, "trained", 0), (base_name, "base", int(trained.ntotal))]
        with _transaction(self.db):
            if extra_segment is not None:
                self.db.execute("INSERT INTO segments(name, rows) VALUES (?, ?)", extra_segment)
            self.db.execute("DELETE FROM index_files")
            self.db.executemany("INSERT INTO index_files(name, role, rows) VALUES (?, ?, ?)", index_rows)
            if extra_segment is not None:
                self.db.execute("DELETE FROM pending")
            self.set_meta("index_type", kind)
            self.set_meta("trained_count", len(live))
            self.bump()
        return self.summary()

    def remove_leftovers(self) -> None:
        """Delete vector and index files the database does not name (a killed run's); writer lock held."""
        named = {n for n, _, _ in self._index_rows()}
        for name in self._segment_names():
            named |= {f"{name}.npy", f"{name}.ids.npy"}
        for path in [*(self.folder / "vectors").glob("*"), *(self.folder / "index").glob("*")]:
            if path.name not in named:
                path.unlink(missing_ok=True)

    def summary(self) -> dict[str, Any]:
        """Counts and settings as a dict (the manifest of the generation)."""
        files, shots = self.counts()
        stamp = self.stamp
        return {
            "format": self.get_meta("format"),
            "model": stamp.__dict__ if stamp else None,
            "index_type": self.get_meta("index_type", "exact"),
            "shots": shots,
            "files": files,
            "skipped": self.skipped(),
            "roots": self.get_meta("roots", []),
            # When this searchable state was made (each publish), as the old per-commit manifests had it.
            "created": self.get_meta("updated") or self.get_meta("created", ""),
            "dead": int(self.get_meta("dead", 0)),
            "captions": int(self.db.execute("SELECT COUNT(*) FROM captions").fetchone()[0]),
        }

    # --- reading ------------------------------------------------------------------------------------
    def _open_segments(self, names: Sequence[str]) -> list[VectorSegment]:
        return [VectorSegment.open(self.folder / "vectors" / f"{n}.npy") for n in names]

    def refresh(self) -> None:
        """Reload the segment and index lists if a writer published since the last look (cheap when not)."""
        version = int(self.get_meta("version", 0))
        if version == self._loaded_version:
            return
        with self.lock:
            self.db.execute("BEGIN")  # one snapshot: the lists and the version agree
            try:
                version = int(self.get_meta("version", 0))
                segment_names = self._segment_names()
                index_rows = self._index_rows()
            finally:
                self.db.execute("COMMIT")
            loaded = {s.path.name: s for s in self._segments}
            self._segments = [loaded.get(f"{n}.npy") or VectorSegment.open(self.folder / "vectors" / f"{n}.npy") for n in segment_names]
            base = next((n for n, role, _ in index_rows if role == "base"), None)
            self._base = load_index(self.folder / "index" / base) if base else None
            if self._base is not None:
                configure_search(self._base)
            self._deltas = [load_index(self.folder / "index" / n) for n, role, _ in index_rows if role == "delta"]
            self._loaded_version = version

    def search_vectors(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of about the top-k stored vectors for one query, best first; lossy kinds re-ranked exactly."""
        self.refresh()
        query = np.asarray(query, np.float32).reshape(1, -1)
        if self._base is None:
            scores, ids = exact_search(self._segments, query, k)
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep]
        kind = self.get_meta("index_type")
        fetch = k if kind == "ivf-flat" else max(REFINE_MIN, REFINE_FACTOR[kind] * k)
        scores, ids = ivf_search(self._base, self._deltas, query, fetch)
        if kind == "ivf-flat":
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep]
        return rerank(self._segments, query[0], ids[0])

    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, float32 vectors) of shot ids, from the stored segments."""
        from aas_core.library.vector_index import gather

        self.refresh()
        return gather(self._segments, np.asarray(ids, np.int64))

    def shots(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Published shots by id, with their file path (ids of removed files are absent)."""
        out: dict[int, dict[str, Any]] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cols = ", ".join(f"s.{c}" for c in SHOT_COLUMNS)
            for row in self.db.execute(
                f"SELECT {cols}, f.path FROM shots s JOIN files f ON f.id = s.file_id WHERE s.id IN ({marks}) "
                "AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.shot_id = s.id)", chunk
            ):
                shot = dict(zip(SHOT_COLUMNS, row[:-1]))
                shot["path"] = os.fsdecode(row[-1])
                out[shot["id"]] = shot
        return out

    def iter_shots(self) -> Iterator[dict[str, Any]]:
        """Every published shot in id order, read lazily."""
        cols = ", ".join(f"s.{c}" for c in SHOT_COLUMNS)
        for row in self.db.execute(
            f"SELECT {cols}, f.path FROM shots s JOIN files f ON f.id = s.file_id "
            "WHERE NOT EXISTS (SELECT 1 FROM pending p WHERE p.shot_id = s.id) ORDER BY s.id"
        ):
            yield {**dict(zip(SHOT_COLUMNS, row[:-1])), "path": os.fsdecode(row[-1])}

    def thumbnail_path(self, shot_id: int) -> str:
        """A JPEG file of the shot's thumbnail, written from the table the first time it is asked for."""
        target = self.folder / "thumbs" / f"{int(shot_id)}.jpg"
        if not target.is_file():
            row = self.db.execute("SELECT jpeg FROM thumbs WHERE shot_id=?", (int(shot_id),)).fetchone()
            if row is None:
                return ""
            atomic_write_bytes(target, row[0])
        return str(target)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()


def _member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Which of `ids` are in `sorted_ids` (ascending): a binary search, not a sort per chunk."""
    if not len(sorted_ids):
        return np.zeros(len(ids), bool)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


def _sample_vectors(segments: Sequence[VectorSegment], live: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Up to `count` live vectors drawn evenly at random from the segments (for training centroids)."""
    total = sum(len(s.ids) for s in segments)
    rate = min(1.0, count / max(total, 1))
    rng = np.random.default_rng(seed)
    parts = []
    for ids, vectors in iter_chunks(segments, dtype=np.float16, once=True):  # converted after picking: 1/50 of the work at 10M
        pick = (rng.random(len(ids)) < rate) & _member(ids, live)
        parts.append(vectors[pick].astype(np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


class LibraryStore:
    """A library folder: its generations, the CURRENT pointer and the writer lock."""

    def __init__(self, path: Optional[str | os.PathLike[str]] = None) -> None:
        self.path = Path(path).expanduser().absolute() if path else default_library()

    def current_name(self) -> Optional[str]:
        """Name of the live generation, or None for an empty library."""
        pointer = self.path / CURRENT
        return pointer.read_text().strip() if pointer.is_file() else None

    def open_live(self) -> Optional[LibraryDB]:
        """The live generation, or None; InputError if it is from another format or damaged."""
        name = self.current_name()
        if name is None:
            return None
        try:
            live = LibraryDB(self.path / name)
            fmt = live.get_meta("format")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"the library at {self.path} is damaged ({exc}); rebuild it with: python -m aas_core library index FOLDER --reindex") from exc
        if fmt != FORMAT_VERSION:
            live.close()
            raise InputError(f"{self.path} was written by another version of this tool; re-index it with --reindex")
        return live

    def read_manifest(self) -> Optional[dict[str, Any]]:
        """The live generation's summary, or None for an empty library."""
        live = self.open_live()
        if live is None:
            return None
        try:
            return live.summary()
        finally:
            live.close()

    def building(self, stamp: Optional[ModelStamp]) -> LibraryDB:
        """A new generation for --reindex; a killed reindex with the same model is resumed where it stopped."""
        current = self.current_name()
        number = int(current.split("-")[1]) if current else 0
        newer = sorted(p for p in self.path.glob("gen-*") if int(p.name.split("-")[1]) > number)
        for folder in newer[:-1]:
            shutil.rmtree(folder, ignore_errors=True)
        if newer:
            with contextlib.suppress(InputError, sqlite3.DatabaseError):
                db = LibraryDB(newer[-1])
                if db.stamp == stamp:
                    return db
                db.close()
            shutil.rmtree(newer[-1], ignore_errors=True)
        db = LibraryDB(self.path / f"gen-{number + 1:06d}", create=True)
        db.init_meta(stamp)
        if current is not None:
            # Imported captions belong to the library, not to one model's vectors: they carry over.
            db.db.execute("ATTACH DATABASE ? AS old", (str(self.path / current / DB_NAME),))
            with _transaction(db.db):
                db.db.execute("INSERT INTO captions(path, start, end, caption) SELECT path, start, end, caption FROM old.captions")
            db.db.execute("DETACH DATABASE old")
        return db

    def make_live(self, db: LibraryDB) -> None:
        """Point CURRENT at `db`'s generation in one rename; the previous one stays for searches in flight."""
        previous = self.current_name()
        atomic_write_bytes(self.path / CURRENT, db.folder.name.encode())
        for old in self.path.glob("gen-*"):
            if old.name not in (db.folder.name, previous):
                shutil.rmtree(old, ignore_errors=True)

    def create_first(self, stamp: Optional[ModelStamp]) -> LibraryDB:
        """The first generation of an empty library (live at once: it holds nothing searchable yet)."""
        db = self.building(stamp)
        self.make_live(db)
        return db

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Exclusive lock so two indexing runs never write one library at once."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(f"another indexing run is writing {self.path}; wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
