"""Writer stage and on-disk library: per-file shards, then atomic generations (vectors + metadata + faiss index).

Layout of a library folder:
  shards/<key>.npy, <key>.json   one per source file (json written last = complete)
  thumbs/<key>-<i>.jpg           one thumbnail per shot
  gen-NNNNNN/                    manifest.json, vectors.npy, shots.json, index.faiss
  CURRENT                        the name of the live generation (swapped in one rename)
Killing an indexing run at any moment leaves CURRENT and its generation untouched; finished shards
are reused by the next run, so it continues where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from aas_core.errors import InputError
from aas_core.fsutil import atomic_path, atomic_write_bytes, atomic_write_json
from aas_core.library.reader import FoundFile
from aas_core.library.vector_index import IndexType, build_index, choose_index_type, load_index, save_index

FORMAT_VERSION = 1
CURRENT = "CURRENT"


def default_library() -> Path:
    """The library folder used when none is given: $AAS_LIBRARY or ./library."""
    return Path(os.environ.get("AAS_LIBRARY") or "library").expanduser().absolute()


def file_key(path: Path) -> str:
    """Stable shard name for a source file (its absolute path, as the bytes the OS holds: any name works)."""
    return hashlib.sha1(os.fsencode(path.absolute())).hexdigest()[:20]


@dataclass(frozen=True)
class ModelStamp:
    """Which embedder made the vectors; an index only mixes vectors of one stamp."""

    name: str
    fingerprint: str
    embed_dim: int
    tiny: bool


@dataclass
class Generation:
    """One committed, searchable state of the library."""

    folder: Path
    manifest: dict[str, Any]
    vectors: np.ndarray
    shots: list[dict[str, Any]]
    index: Any

    @property
    def stamp(self) -> ModelStamp:
        """The embedder these vectors came from."""
        m = self.manifest["model"]
        return ModelStamp(m["name"], m["fingerprint"], int(m["embed_dim"]), bool(m.get("tiny", False)))


class LibraryStore:
    """Reads and writes one library folder."""

    def __init__(self, path: Optional[str | os.PathLike[str]] = None) -> None:
        self.path = Path(path).expanduser().absolute() if path else default_library()
        self.shards = self.path / "shards"
        self.thumbs = self.path / "thumbs"

    # --- reading -------------------------------------------------------------------------
    def current_name(self) -> Optional[str]:
        """Name of the live generation, or None for an empty library."""
        pointer = self.path / CURRENT
        return pointer.read_text().strip() if pointer.is_file() else None

    def read_manifest(self) -> Optional[dict[str, Any]]:
        """The live generation's manifest, or None."""
        name = self.current_name()
        if name is None:
            return None
        return json.loads((self.path / name / "manifest.json").read_text())

    def load(self) -> Generation:
        """Load the live generation (vectors memory-mapped); InputError if the library is empty."""
        name = self.current_name()
        if name is None:
            raise InputError(
                f"no clip library at {self.path}; build one with: python -m aas_core library index FOLDER --library {self.path}"
            )
        folder = self.path / name
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if manifest.get("format") != FORMAT_VERSION:
                raise InputError(f"{self.path} was written by another version of this tool; re-index it with --reindex")
            vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
            shots = json.loads((folder / "shots.json").read_text())
            index = load_index(folder / "index.faiss") if shots else None
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"the library at {self.path} is damaged ({exc}); rebuild it with: python -m aas_core library index FOLDER --reindex") from exc
        return Generation(folder, manifest, vectors, shots, index)

    # --- shards (writer stage) -------------------------------------------------------------
    def shard_record(self, found: FoundFile) -> Optional[dict[str, Any]]:
        """The finished shard of a file if it matches the file's current size and mtime."""
        meta_path = self.shards / f"{file_key(found.path)}.json"
        if not meta_path.is_file():
            return None
        try:
            record = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if record.get("size") != found.size or record.get("mtime_ns") != found.mtime_ns:
            return None
        return record

    def write_shard(self, found: FoundFile, stamp: ModelStamp, shots: list[dict[str, Any]], vectors: np.ndarray, thumbs: list[bytes], info: dict) -> None:
        """Persist one indexed file: vectors, thumbnails, then its JSON record (the completion mark)."""
        key = file_key(found.path)
        self.shards.mkdir(parents=True, exist_ok=True)
        self.thumbs.mkdir(parents=True, exist_ok=True)
        for i, (shot, jpeg) in enumerate(zip(shots, thumbs)):
            thumb = self.thumbs / f"{key}-{i}.jpg"
            atomic_write_bytes(thumb, jpeg)
            shot["thumbnail"] = str(thumb)
        with atomic_path(self.shards / f"{key}.npy", suffix=".npy") as tmp:
            np.save(tmp, np.asarray(vectors, np.float32))
        self._write_record(found, stamp, status="indexed", reason="", shots=shots, info=info)

    def write_skip(self, found: FoundFile, stamp: ModelStamp, reason: str) -> None:
        """Record that a file was skipped and why (retried only if the file changes)."""
        self.shards.mkdir(parents=True, exist_ok=True)
        self._write_record(found, stamp, status="skipped", reason=reason, shots=[], info={})

    def _write_record(self, found: FoundFile, stamp: ModelStamp, status: str, reason: str, shots: list, info: dict) -> None:
        atomic_write_json(
            self.shards / f"{file_key(found.path)}.json",
            {
                "path": str(found.path),
                "size": found.size,
                "mtime_ns": found.mtime_ns,
                "model": stamp.__dict__,
                "status": status,
                "reason": reason,
                "shots": shots,
                "info": info,
            },
        )

    def drop_shard(self, key: str) -> None:
        """Delete a shard and its thumbnails (its source file is gone)."""
        for p in [self.shards / f"{key}.json", self.shards / f"{key}.npy", *self.thumbs.glob(f"{key}-*.jpg")]:
            p.unlink(missing_ok=True)

    def shard_keys(self) -> list[str]:
        """Keys of every finished shard."""
        return sorted(p.stem for p in self.shards.glob("*.json")) if self.shards.is_dir() else []

    def read_record(self, key: str) -> dict[str, Any]:
        """A shard's JSON record by key."""
        return json.loads((self.shards / f"{key}.json").read_text())

    def wipe(self) -> None:
        """Forget every shard (used by --reindex); the live generation, thumbnails included, stays until the next commit."""
        shutil.rmtree(self.shards, ignore_errors=True)

    # --- commit ------------------------------------------------------------------------------
    def commit(self, stamp: ModelStamp, roots: list[str], index_type: Optional[IndexType] = None) -> dict[str, Any]:
        """Gather every shard into a new generation and make it live in one rename; returns its manifest."""
        vectors, shots, skipped = [], [], []
        for key in self.shard_keys():
            record = self.read_record(key)
            if record["status"] == "skipped":
                skipped.append({"path": record["path"], "reason": record["reason"]})
                continue
            if record["model"]["fingerprint"] != stamp.fingerprint:
                continue
            vectors.append(np.load(self.shards / f"{key}.npy", allow_pickle=False))
            shots.extend({**shot, "path": record["path"]} for shot in record["shots"])
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, stamp.embed_dim), np.float32)
        chosen = index_type or choose_index_type(len(matrix))
        previous = self.current_name()
        number = int(previous.split("-")[1]) + 1 if previous else 1
        name = f"gen-{number:06d}"
        folder = self.path / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        np.save(folder / "vectors.npy", matrix.astype(np.float32))
        atomic_write_json(folder / "shots.json", shots)
        if len(matrix):
            save_index(build_index(matrix, chosen), folder / "index.faiss")
        manifest = {
            "format": FORMAT_VERSION,
            "model": stamp.__dict__,
            "index_type": chosen,
            "shots": len(shots),
            "files": len({s["path"] for s in shots}),
            "skipped": skipped,
            "roots": sorted(set(roots)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(folder / "manifest.json", manifest)
        atomic_write_bytes(self.path / CURRENT, name.encode())
        # Keep the previous generation: a search that read CURRENT a moment ago may still open it.
        for old in self.path.glob("gen-*"):
            if old.name not in (name, previous):
                shutil.rmtree(old, ignore_errors=True)
        # Thumbnails neither live generation points at (left by a --reindex) go now.
        kept = {s.get("thumbnail") for s in shots}
        if previous and (self.path / previous / "shots.json").is_file():
            kept |= {s.get("thumbnail") for s in json.loads((self.path / previous / "shots.json").read_text())}
        for thumb in self.thumbs.glob("*.jpg") if self.thumbs.is_dir() else []:
            if str(thumb) not in kept:
                thumb.unlink(missing_ok=True)
        return manifest

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
