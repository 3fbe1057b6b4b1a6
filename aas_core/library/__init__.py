"""Clip library: index a folder of stock footage (reader -> embedder -> writer) and search it by text, image,
caption words and motion."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

import numpy as np

from aas_core.device import Runtime
from aas_core.errors import InputError
from aas_core.library.captions import FETCH_TIMEOUT_S, caption_candidates, fetch_remote, import_captions, is_url, url_name
from aas_core.library.indexer import run_in_process
from aas_core.library.reader import MOTION_CLASSES, FoundFile, ReaderSettings, motion_class, scan_folder
from aas_core.library.store import LibraryDB, LibraryStore, ModelStamp, default_library, path_bytes
from aas_core.library.vector_index import IndexType, parse_memory
from aas_core.limits import MAX_QUERY_CHARS, MAX_REMOTE_CLIP_BYTES, check_text
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.registry import DEFAULT_CLIP, names_of_kind

CLIP_MODELS: tuple[str, ...] = names_of_kind("clip")
Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = ("local", "ray")
MotionClass = Literal["still", "slow", "fast"]
RRF_K = 60
"""Reciprocal-rank-fusion constant (the usual 60): damps the difference between the first few ranks."""

__all__ = [
    "CLIP_MODELS",
    "ENGINES",
    "MOTION_CLASSES",
    "ClipHit",
    "IndexSummary",
    "LibraryInfo",
    "ReaderSettings",
    "compact",
    "default_library",
    "fetch_hit",
    "fetch_remote",
    "import_captions",
    "index_folder",
    "library_info",
    "list_shots",
    "search",
]


@dataclass(frozen=True)
class ClipHit:
    """One search result: a shot of a source clip, how well it matches and how it moves."""

    path: str
    start: float
    end: float
    score: float
    """The ranking score: cosine similarity, or the fused score when captions took part."""
    thumbnail: str
    fps: float
    width: int
    height: int
    rank: int = 0
    shot_id: int = 0
    clip_score: Optional[float] = None
    caption_score: Optional[float] = None
    """BM25 of the best matching caption (higher is better); None when no caption matched."""
    caption: str = ""
    motion: float = 0.0
    """Mean optical flow, in frame widths per second."""
    camera_ratio: float = 0.0
    """Share of the motion that is the camera's (0 = subject only, 1 = camera only)."""
    motion_class: str = ""
    remote: bool = False
    """A captioned URL not fetched yet: `fetch_hit(hit)` downloads it (once, cached) when the hit is used."""
    url: str = ""
    """Where a fetched remote clip came from ("" for the library's own files)."""

    @property
    def duration(self) -> float:
        """Shot length in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with duration)."""
        return {**asdict(self), "duration": round(self.duration, 3)}


@dataclass
class IndexSummary:
    """What one indexing run did."""

    library: str
    model: str
    index_type: str
    files_seen: int
    files_indexed: int
    files_reused: int
    files_removed: int
    shots: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Files skipped in this folder, with the reason."""
    engine: str = "local"


@dataclass
class LibraryInfo:
    """Counts and settings of a library."""

    library: str
    model: str
    tiny: bool
    index_type: str
    files: int
    shots: int
    skipped: list[dict[str, str]]
    roots: list[str]
    created: str
    captions: int = 0
    dead: int = 0
    """Vectors of removed files still in the index (dropped by `compact`)."""


class _Writer:
    """The writer stage: one transaction per finished file; counts the skips of this run."""

    def __init__(self, db: LibraryDB) -> None:
        self.db = db
        self.skipped: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def file_done(self, found: FoundFile, shots: list[dict[str, Any]], vectors: np.ndarray, thumbs: list[bytes], info: dict) -> None:
        """Store one indexed file (pending until publish)."""
        with self.lock:
            self.db.add_file(found, shots, vectors, thumbs, info)

    def file_skipped(self, found: FoundFile, reason: str) -> None:
        """Store one skipped file with its reason."""
        with self.lock:
            self.db.add_skip(found, reason)
            self.skipped.append({"path": str(found.path), "reason": reason})


def _resolve_budget(memory_budget: Optional[str | int | float]) -> Optional[int]:
    return None if memory_budget is None else parse_memory(memory_budget)


def index_folder(
    folder: str | os.PathLike[str],
    library: Optional[str | os.PathLike[str]] = None,
    model: Optional[str] = None,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional[Runtime] = None,
    settings: ReaderSettings = ReaderSettings(),
    reindex: bool = False,
    index_type: Optional[IndexType] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    memory_budget: Optional[str | int | float] = None,
    engine: Engine = "local",
    ray_address: Optional[str] = None,
    workers: Optional[int] = None,
) -> IndexSummary:
    """Index every video under `folder` into `library`: new or changed files only; removed ones dropped.

    Steps: 1. check settings and scan; 2. open (or start) the generation to write; 3. plan which files to
    read; 4. run an engine (in process or Ray Data) into the writer; 5. publish (index add or compact).
    """
    from aas_core.library.embed import ClipEmbedder

    settings.validate()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    budget = _resolve_budget(memory_budget)
    store = LibraryStore(library)
    folder = Path(folder).expanduser().absolute()
    found = scan_folder(folder)
    with store.writer_lock():
        # 2. the generation to write: the live one, or a new one for --reindex / an empty library.
        live = store.open_live()
        live_stamp = live.stamp if live is not None else None
        if live_stamp is not None and not reindex:
            if model is not None and model != live_stamp.name:
                raise InputError(
                    f"the library at {store.path} was built with {live_stamp.name}, not {model}; "
                    f"re-index it with --reindex (or use another --library folder)"
                )
            model = live_stamp.name
        embedder = ClipEmbedder.load(model or DEFAULT_CLIP, weights_root, runtime)
        stamp = ModelStamp(embedder.name, embedder.fingerprint, embedder.embed_dim, embedder.tiny)
        if live_stamp is not None and not reindex and live_stamp.fingerprint != stamp.fingerprint:
            raise InputError(
                f"the weights of {stamp.name} changed since {store.path} was indexed; "
                "vectors from two models cannot be mixed: re-index with --reindex"
            )
        if live is not None and not reindex:
            db = live
            if live_stamp is None:
                db.init_meta(stamp)
        else:
            if live is not None:
                live.close()
            db = store.building(stamp) if live is not None else store.create_first(stamp)
        try:
            db.remove_leftovers()
            # 3. plan: removed files dropped, unchanged ones reused, the rest read.
            removed = db.remove_missing(folder, {path_bytes(f.path) for f in found})
            writer = _Writer(db)
            todo, reused, skipped = [], 0, []
            for f in found:
                record = db.file_record(f)
                if f.skip_reason:
                    if record is None:
                        db.add_skip(f, f.skip_reason)
                    skipped.append({"path": str(f.path), "reason": f.skip_reason})
                elif record is not None:
                    reused += 1
                    if record["status"] == "skipped":
                        skipped.append({"path": str(f.path), "reason": record["reason"]})
                else:
                    todo.append(f)
            # 4. the engine; crops are cut once at the embedder's input size so it never resizes again.
            settings = replace(settings, crop_size=embedder.image_size)
            report(on_progress, 0.0, f"{len(todo)} to index, {reused} unchanged")
            if engine == "ray" and todo:
                from aas_core.library.ray_engine import run_ray

                run_ray(todo, settings, stamp.name, weights_root, runtime, writer, ray_address, workers, on_progress, cancel)
            elif todo:
                run_in_process(todo, settings, embedder, writer, on_progress, cancel)
            skipped += writer.skipped
            # 5. publish: new vectors become searchable in one transaction.
            report(on_progress, 0.96, "updating the vector index")
            db.set_meta("roots", sorted(set(db.get_meta("roots", [])) | {str(folder)}))
            summary = db.publish(index_type, budget)
            if db is not live:
                store.make_live(db)
            report(on_progress, 1.0, f"{summary['shots']} shots in {summary['files']} files")
        finally:
            db.close()
    _forget(store)
    return IndexSummary(
        library=str(store.path),
        model=stamp.name,
        index_type=summary["index_type"],
        files_seen=len(found),
        files_indexed=len(todo),
        files_reused=reused,
        files_removed=removed,
        shots=summary["shots"],
        skipped=skipped,
        engine=engine,
    )


def compact(
    library: Optional[str | os.PathLike[str]] = None,
    memory_budget: Optional[str | int | float] = None,
    index_type: Optional[IndexType] = None,
) -> LibraryInfo:
    """Retrain the vector index on the live vectors (dropping removed files' ones), its kind chosen under the budget."""
    store = LibraryStore(library)
    with store.writer_lock():
        db = store.open_live()
        if db is None:
            raise InputError(f"no clip library at {store.path}; build one with: python -m aas_core library index FOLDER --library {store.path}")
        try:
            db.remove_leftovers()
            db.compact(index_type, _resolve_budget(memory_budget))
        finally:
            db.close()
    _forget(store)
    return library_info(library)


_OPEN: dict[tuple[str, str], LibraryDB] = {}
_OPEN_LOCK = threading.Lock()


def _open_generation(store: LibraryStore) -> LibraryDB:
    """The live generation, opened once per (library, generation) and refreshed cheaply after each publish."""
    name = store.current_name()
    if name is None:
        raise InputError(f"no clip library at {store.path}; build one with: python -m aas_core library index FOLDER --library {store.path}")
    key = (str(store.path), name)
    with _OPEN_LOCK:
        db = _OPEN.get(key)
        if db is None:
            for old_key in [k for k in _OPEN if k[0] == key[0]]:
                _OPEN.pop(old_key).close()
            db = store.open_live()
            if db is None:
                raise InputError(f"no clip library at {store.path}")
            _OPEN[key] = db
    return db


def _forget(store: LibraryStore) -> None:
    """Drop this process's open handles of a library (after this process wrote it)."""
    with _OPEN_LOCK:
        for key in [k for k in _OPEN if k[0] == str(store.path)]:
            _OPEN.pop(key).close()


def _query_vector(db: LibraryDB, query: str, image: Any, vector: Any, weights_root: Any, runtime: Optional[Runtime]) -> np.ndarray:
    """The query as a unit vector: given directly, or embedded by the library's own CLIP model."""
    from aas_core.library.embed import ClipEmbedder

    stamp = db.stamp
    if vector is not None:
        vector = np.asarray(vector, np.float32).reshape(-1)
        if stamp is not None and vector.shape[0] != stamp.embed_dim:
            raise InputError(f"the query vector has {vector.shape[0]} dimensions; this library's vectors have {stamp.embed_dim}")
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
    embedder = ClipEmbedder.load(stamp.name, weights_root, runtime)
    if embedder.fingerprint != stamp.fingerprint:
        raise InputError(
            f"the library at {db.folder.parent} was indexed with other {stamp.name} weights than the ones in the weights folder; "
            "re-index it with: python -m aas_core library index FOLDER --reindex"
        )
    if image is not None:
        pixels = image if isinstance(image, np.ndarray) else _read_image(image)
        return embedder.embed_images([pixels])[0]
    return embedder.embed_texts([query.strip()])[0]


def _passes(shot: dict[str, Any], min_duration: float, motion: Optional[str]) -> bool:
    if shot["end"] - shot["start"] + 1e-6 < min_duration:
        return False
    return motion is None or motion_class(shot.get("motion") or 0.0) == motion


def search(
    query: Optional[str] = None,
    k: int = 5,
    library: Optional[str | os.PathLike[str]] = None,
    image: Optional[str | os.PathLike[str] | np.ndarray] = None,
    min_duration: float = 0.0,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional[Runtime] = None,
    motion: Optional[MotionClass] = None,
    caption_weight: float = 1.0,
    vector: Optional[np.ndarray] = None,
) -> list[ClipHit]:
    """Rank the library's shots against a text query, an example image or a vector (cosine similarity),
    fused with caption matches (reciprocal rank fusion, `caption_weight`) and filtered by duration and motion."""
    query = check_text(query, "the search text", MAX_QUERY_CHARS)
    if not query.strip() and image is None and vector is None:
        raise InputError("type what happens in the shot (e.g. 'a man walks a dog in a park') or give an example image")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if min_duration < 0:
        raise InputError(f"min_duration must be >= 0 seconds, got {min_duration}")
    if motion is not None and motion not in MOTION_CLASSES:
        raise InputError(f"motion must be one of {', '.join(MOTION_CLASSES)}, got {motion!r}")
    if not caption_weight >= 0:
        raise InputError(f"caption_weight must be >= 0, got {caption_weight}")
    db = _open_generation(LibraryStore(library))
    db.refresh()
    has_vectors = db.stored_vectors() > 0
    use_captions = bool(query.strip()) and image is None and vector is None and caption_weight > 0
    captions = caption_candidates(db, query, max(50, 4 * k)) if use_captions else []
    if not has_vectors and not captions:
        if db.summary()["captions"] and use_captions:
            return []
        raise InputError(f"the library at {db.folder.parent} holds no shots yet; index a folder of clips first")
    qvec = _query_vector(db, query, image, vector, weights_root, runtime) if has_vectors else None
    filtered = min_duration > 0 or motion is not None
    # 1. CLIP candidates: fetch more until k pass the filters (or the whole library was seen).
    clip: list[tuple[dict[str, Any], float]] = []
    if qvec is not None:
        total = db.stored_vectors()
        want = min(total, k if not filtered and not captions else max(4 * k, 64))
        while True:
            scores, ids = db.search_vectors(qvec, want)
            shots = db.shots(ids)
            clip = [(shots[int(i)], float(s)) for s, i in zip(scores, ids) if int(i) in shots and _passes(shots[int(i)], min_duration, motion)]
            if len(clip) >= k or want >= total:
                break
            want = min(total, want * 4)
    if not captions:
        return [_hit(db, shot, score, rank + 1, clip_score=score) for rank, (shot, score) in enumerate(clip[:k])]
    # 2. fuse with caption matches: every candidate gets both ranks (its CLIP score read from the stored vectors).
    return _fuse(db, clip, captions, qvec, k, caption_weight, min_duration, motion)


def _fuse(db: LibraryDB, clip: list, captions: list, qvec: Optional[np.ndarray], k: int, caption_weight: float,
          min_duration: float, motion: Optional[str]) -> list[ClipHit]:
    """Reciprocal rank fusion of CLIP similarity and caption BM25 over the union of both candidate lists."""
    cands: dict[Any, dict[str, Any]] = {}
    for shot, score in clip:
        cands[shot["id"]] = {"shot": shot, "clip": score}
    missing = [c["shot_id"] for c in captions if c["shot_id"] is not None and c["shot_id"] not in cands]
    if missing and qvec is not None:
        found, vectors = db.vectors_of(np.asarray(missing, np.int64))
        extra = db.shots(missing)
        for sid, ok, vec in zip(missing, found, vectors):
            if ok and sid in extra and _passes(extra[sid], min_duration, motion):
                cands[sid] = {"shot": extra[sid], "clip": float(vec @ qvec)}
    for c in captions:
        key = c["shot_id"] if c["shot_id"] is not None else ("remote", c["caption_id"])
        if c["shot_id"] is None:
            # A captioned URL: its motion is unknown until fetched and indexed, so a motion filter excludes it.
            remote = {"id": 0, "path": c["path"], "start": c["start"] or 0.0, "end": c["end"] or 0.0, "fps": 0.0, "width": 0,
                      "height": 0, "motion": 0.0, "camera_motion": 0.0, "subject_motion": 0.0}
            if motion is not None or (min_duration > 0 and not _passes(remote, min_duration, None)):
                continue
            cands.setdefault(key, {"shot": remote, "clip": None, "remote": True})
        if key in cands and "bm25" not in cands[key]:
            cands[key].update(bm25=c["bm25"], caption=c["caption"])
    by_clip = sorted((key for key, c in cands.items() if c["clip"] is not None), key=lambda key: -cands[key]["clip"])
    by_caption = sorted((key for key, c in cands.items() if "bm25" in c), key=lambda key: -cands[key]["bm25"])
    fused = {key: 0.0 for key in cands}
    for rank, key in enumerate(by_clip):
        fused[key] += 1.0 / (RRF_K + rank + 1)
    for rank, key in enumerate(by_caption):
        fused[key] += caption_weight / (RRF_K + rank + 1)
    # Ties (a caption-only URL against CLIP's first) go to the caption match: the query named its words.
    order = sorted(cands, key=lambda key: (-round(fused[key], 9), -cands[key].get("bm25", 0.0), -(cands[key]["clip"] or -2.0)))[:k]
    return [_hit(db, cands[key]["shot"], fused[key], rank + 1, clip_score=cands[key]["clip"], caption_score=cands[key].get("bm25"),
                 caption=cands[key].get("caption", ""), remote=cands[key].get("remote", False)) for rank, key in enumerate(order)]


def _hit(db: LibraryDB, shot: dict[str, Any], score: float, rank: int, clip_score: Optional[float] = None,
         caption_score: Optional[float] = None, caption: str = "", remote: bool = False) -> ClipHit:
    camera, subject = shot.get("camera_motion") or 0.0, shot.get("subject_motion") or 0.0
    mean = shot.get("motion") or 0.0
    return ClipHit(
        path=shot["path"], start=shot["start"], end=shot["end"], score=round(float(score), 5),
        thumbnail="" if remote else db.thumbnail_path(shot["id"]), fps=shot["fps"] or 0.0, width=shot["width"] or 0,
        height=shot["height"] or 0, rank=rank, shot_id=int(shot["id"]),
        clip_score=None if clip_score is None else round(float(clip_score), 5),
        caption_score=None if caption_score is None else round(float(caption_score), 4), caption=caption,
        motion=round(mean, 5), camera_ratio=round(camera / (camera + subject), 3) if camera + subject > 1e-9 else 0.0,
        motion_class="" if remote else motion_class(mean), remote=remote,
    )


Hit = TypeVar("Hit", ClipHit, dict)


def fetch_hit(hit: Hit, library: Optional[str | os.PathLike[str]] = None, timeout: float = FETCH_TIMEOUT_S,
              max_bytes: int = MAX_REMOTE_CLIP_BYTES) -> Hit:
    """A hit ready to use like a library clip: a remote one downloaded once into `<library>/remote-cache` (at most
    `max_bytes`), its span, size and fps read from the file (`url` keeps where it came from); a local one as it is."""
    data = hit if isinstance(hit, dict) else hit.to_dict()
    if not data.get("remote") or not is_url(str(data["path"])):
        return hit
    from aas_core.video_io import probe

    url = str(data["path"])
    info = probe(fetch_remote(url, library, timeout=timeout, max_bytes=max_bytes))
    start = float(data.get("start") or 0.0)
    if start >= info.duration:
        raise InputError(f"{url_name(url)} ({url}) lasts {info.duration:.2f} s; its caption's span starts at {start:.2f} s: "
                         "fix the start in the captions file and import it again")
    end = float(data.get("end") or 0.0)
    end = min(end, info.duration) if end > start else info.duration  # no end in the caption row: the whole clip
    changes = {"path": info.path, "start": start, "end": round(end, 6), "fps": info.fps, "width": info.width,
               "height": info.height, "remote": False, "url": url}
    if isinstance(hit, ClipHit):
        return replace(hit, **changes)
    return {**hit, **changes, **({"duration": round(end - start, 3)} if "duration" in hit else {})}


def _read_image(path: str | os.PathLike[str]) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}); use a jpg, png or webp file") from exc


def library_info(library: Optional[str | os.PathLike[str]] = None) -> LibraryInfo:
    """Counts, model, index type and skipped files of a library."""
    store = LibraryStore(library)
    manifest = store.read_manifest()
    if manifest is None or (manifest["model"] is None and not manifest["captions"]):
        raise InputError(f"no clip library at {store.path}; build one with: python -m aas_core library index FOLDER --library {store.path}")
    model = manifest["model"] or {"name": ""}  # a captions-only library (import-captions before any index) has none yet
    return LibraryInfo(
        library=str(store.path),
        model=model["name"],
        tiny=bool(model.get("tiny")),
        index_type=manifest["index_type"],
        files=manifest["files"],
        shots=manifest["shots"],
        skipped=manifest["skipped"],
        roots=manifest["roots"],
        created=manifest["created"],
        captions=manifest["captions"],
        dead=manifest["dead"],
    )


def list_shots(library: Optional[str | os.PathLike[str]] = None, limit: Optional[int] = None) -> list[dict[str, Any]]:
    """Indexed shots (path, span, size, motion), in index order; `limit` caps how many (read lazily)."""
    db = _open_generation(LibraryStore(library))
    out = []
    for shot in db.iter_shots():
        if limit is not None and len(out) >= limit:
            break
        out.append(shot)
    return out
