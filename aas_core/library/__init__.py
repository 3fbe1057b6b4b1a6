"""Clip library: index a folder of stock footage (reader -> embedder -> writer) and search it by text or image."""

from __future__ import annotations

import io
import os
import queue
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from aas_core.device import Runtime
from aas_core.errors import AASError, InputError
from aas_core.limits import MAX_QUERY_CHARS, check_text
from aas_core.library.reader import FoundFile, ReaderSettings, SampledShot, iter_shots, scan_folder
from aas_core.library.store import Generation, LibraryStore, ModelStamp, default_library, file_key
from aas_core.library.vector_index import IndexType, search_index
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.registry import DEFAULT_CLIP, names_of_kind
from aas_core.video_io import probe

CLIP_MODELS: tuple[str, ...] = names_of_kind("clip")
EMBED_BATCH = 64
"""Frames per embedder call while indexing: large enough to keep a GPU busy, small enough for a CPU."""
MIN_EAGER_BATCH = 8
"""Smallest batch embedded early, while the reader is still decoding."""

__all__ = [
    "CLIP_MODELS",
    "ClipHit",
    "IndexSummary",
    "LibraryInfo",
    "ReaderSettings",
    "default_library",
    "index_folder",
    "library_info",
    "search",
]


@dataclass(frozen=True)
class ClipHit:
    """One search result: a shot of a source clip and how well it matches."""

    path: str
    start: float
    end: float
    score: float
    thumbnail: str
    fps: float
    width: int
    height: int
    rank: int = 0

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


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


_END = object()


def _reader_thread(files: list[FoundFile], settings: ReaderSettings, out: "queue.Queue", stop: threading.Event) -> None:
    """Decode and split files ahead of the embedder so decoding overlaps with embedding.

    Any failure inside one file (a decoder assertion, a codec quirk) becomes that file's skip reason;
    the end marker is always sent, so the main loop never waits on a dead reader.
    """
    try:
        for found in files:
            if stop.is_set():
                break
            try:
                info = probe(found.path)
                for shot in iter_shots(found.path, settings, info, stop=stop.is_set):
                    if stop.is_set():
                        break
                    jpeg = _encode_jpeg(shot.thumbnail)
                    shot.thumbnail = None
                    _put(out, ("shot", found, (shot, jpeg)), stop)
                _put(out, ("done", found, info), stop)
            except Exception as exc:  # third-party decoders raise anything (AssertionError from PySceneDetect)
                _put(out, ("error", found, _reason(exc)), stop)
    finally:
        _put(out, (_END, None, None), stop)


def _reason(exc: BaseException) -> str:
    """A skip reason for a file: our own messages as they are, anything else with its type."""
    if isinstance(exc, AASError):
        return str(exc)
    return f"could not be read ({type(exc).__name__}: {exc})" if str(exc) else f"could not be read ({type(exc).__name__})"


def _put(out: "queue.Queue", item: tuple, stop: threading.Event) -> None:
    """Put on a bounded queue without blocking forever once the consumer has stopped."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _next_item(q: "queue.Queue", reader: threading.Thread, cancel: Optional[CancelToken]) -> tuple:
    """The next reader item, honouring cancellation while waiting; a reader that died unannounced ends the run."""
    while True:
        if cancel is not None:
            cancel.check()
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if not reader.is_alive() and q.empty():
                raise AASError("the reader stage stopped unexpectedly; finished files were kept, run the same command again")


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
) -> IndexSummary:
    """Index every video under `folder` into `library`: new or changed files only; removed ones dropped."""
    from aas_core.library.embed import ClipEmbedder

    settings.validate()
    store = LibraryStore(library)
    folder = Path(folder).expanduser().absolute()
    found = scan_folder(folder)
    with store.writer_lock():
        manifest = store.read_manifest()
        if manifest is not None and not reindex:
            built_with = manifest["model"]["name"]
            if model is not None and model != built_with:
                raise InputError(
                    f"the library at {store.path} was built with {built_with}, not {model}; "
                    f"re-index it with --reindex (or use another --library folder)"
                )
            model = built_with
        embedder = ClipEmbedder.load(model or DEFAULT_CLIP, weights_root, runtime)
        stamp = ModelStamp(embedder.name, embedder.fingerprint, embedder.embed_dim, embedder.tiny)
        if manifest is not None and not reindex and manifest["model"]["fingerprint"] != stamp.fingerprint:
            raise InputError(
                f"the weights of {stamp.name} changed since {store.path} was indexed; "
                "vectors from two models cannot be mixed: re-index with --reindex"
            )
        if reindex:
            store.wipe()

        present_keys = {file_key(f.path) for f in found}
        removed = 0
        for key in store.shard_keys():
            record_path = Path(store.read_record(key)["path"])
            if key not in present_keys and folder in record_path.parents:
                store.drop_shard(key)
                removed += 1

        todo, reused, skipped = [], 0, []
        for f in found:
            record = store.shard_record(f)
            if f.skip_reason:
                if record is None:
                    store.write_skip(f, stamp, f.skip_reason)
                skipped.append({"path": str(f.path), "reason": f.skip_reason})
                continue
            if record is not None and record["model"]["fingerprint"] == stamp.fingerprint:
                reused += 1
                if record["status"] == "skipped":
                    skipped.append({"path": str(f.path), "reason": record["reason"]})
                continue
            todo.append(f)

        # Crop once at the embedder's input size so it never resizes again.
        settings = replace(settings, crop_size=embedder.image_size)
        q: "queue.Queue" = queue.Queue(maxsize=8)
        stop = threading.Event()
        reader = threading.Thread(target=_reader_thread, args=(todo, settings, q, stop), daemon=True)
        reader.start()
        # Shots wait here until enough frames gather for one embedder batch; crops are dropped once embedded.
        waiting: list[tuple[SampledShot, list]] = []
        embedded: dict[Path, list[tuple[SampledShot, bytes, np.ndarray]]] = {}

        def flush() -> None:
            frames = [crop for shot, _ in waiting for crop in shot.crops]
            vectors = embedder.embed_images(frames, batch_size=EMBED_BATCH)
            offset = 0
            for shot, slot in waiting:
                mean = vectors[offset : offset + len(shot.crops)].mean(axis=0)
                offset += len(shot.crops)
                slot.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
                shot.crops = []
            waiting.clear()

        done = 0
        report(on_progress, 0.0, f"{len(todo)} to index, {reused} unchanged")
        try:
            while True:
                kind, f, payload = _next_item(q, reader, cancel)
                if kind is _END:
                    break
                if kind == "shot":
                    shot, jpeg = payload
                    slot: list = []
                    waiting.append((shot, slot))
                    embedded.setdefault(f.path, []).append((shot, jpeg, slot))
                    # Embed a full batch, or whatever is ready when the reader has nothing more yet,
                    # so the embedder never idles while the reader decodes.
                    ready = sum(len(s.crops) for s, _ in waiting)
                    if ready >= EMBED_BATCH or (q.empty() and ready >= MIN_EAGER_BATCH):
                        flush()
                    continue
                flush()
                shots = embedded.pop(f.path, [])
                if kind == "error":
                    store.write_skip(f, stamp, payload)
                    skipped.append({"path": str(f.path), "reason": payload})
                elif not shots:
                    reason = "no shot long enough to use (shorter than the minimum shot length)"
                    store.write_skip(f, stamp, reason)
                    skipped.append({"path": str(f.path), "reason": reason})
                else:
                    info = payload
                    meta = [
                        {"start": round(s.start, 4), "end": round(s.end, 4), "fps": info.fps, "width": info.width,
                         "height": info.height, "frames_sampled": s.frames_sampled,
                         "motion": round(s.motion.motion, 5), "camera_motion": round(s.motion.camera, 5),
                         "subject_motion": round(s.motion.subject, 5)}
                        for s, _, _ in shots
                    ]
                    store.write_shard(f, stamp, meta, np.stack([slot[0] for _, _, slot in shots]), [jpeg for _, jpeg, _ in shots],
                                      {"duration": info.duration, "fps": info.fps, "width": info.width, "height": info.height})
                done += 1
                report(on_progress, done / max(len(todo), 1) * 0.95, f"{done}/{len(todo)} {f.path.name}")
        finally:
            stop.set()
            # The reader sees `stop` at its next frame or put, and ends with us.
            reader.join()
        report(on_progress, 0.96, "building the vector index")
        roots = (manifest or {}).get("roots", []) if not reindex else []
        new_manifest = store.commit(stamp, roots + [str(folder)], index_type)
        report(on_progress, 1.0, f"{new_manifest['shots']} shots in {new_manifest['files']} files")
    return IndexSummary(
        library=str(store.path),
        model=stamp.name,
        index_type=new_manifest["index_type"],
        files_seen=len(found),
        files_indexed=len(todo),
        files_reused=reused,
        files_removed=removed,
        shots=new_manifest["shots"],
        skipped=skipped,
    )


_LOADED: dict[tuple[str, str], Generation] = {}


def _load_generation(store: LibraryStore) -> Generation:
    """The live generation, loaded once per (library, generation)."""
    name = store.current_name() or ""
    key = (str(store.path), name)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = store.load()
    return _LOADED[key]


def search(
    query: Optional[str] = None,
    k: int = 5,
    library: Optional[str | os.PathLike[str]] = None,
    image: Optional[str | os.PathLike[str] | np.ndarray] = None,
    min_duration: float = 0.0,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional[Runtime] = None,
) -> list[ClipHit]:
    """Rank the library's shots against a text query or an example image (cosine similarity)."""
    from aas_core.library.embed import ClipEmbedder

    query = check_text(query, "the search text", MAX_QUERY_CHARS)
    if not query.strip() and image is None:
        raise InputError("type what happens in the shot (e.g. 'a man walks a dog in a park') or give an example image")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if min_duration < 0:
        raise InputError(f"min_duration must be >= 0 seconds, got {min_duration}")
    store = LibraryStore(library)
    generation = _load_generation(store)
    if not generation.shots:
        raise InputError(f"the library at {store.path} holds no shots yet; index a folder of clips first")
    stamp = generation.stamp
    embedder = ClipEmbedder.load(stamp.name, weights_root, runtime)
    if embedder.fingerprint != stamp.fingerprint:
        raise InputError(
            f"the library at {store.path} was indexed with other {stamp.name} weights than the ones in the weights folder; "
            "re-index it with: python -m aas_core library index FOLDER --reindex"
        )
    if image is not None:
        pixels = image if isinstance(image, np.ndarray) else _read_image(image)
        vector = embedder.embed_images([pixels])
    else:
        vector = embedder.embed_texts([query.strip()])
    total = len(generation.shots)
    want = min(total, k if min_duration <= 0 else max(4 * k, 64))
    while True:
        scores, ids = search_index(generation.index, vector, want)
        hits = []
        for score, idx in zip(scores[0], ids[0]):
            if idx < 0:
                continue
            shot = generation.shots[idx]
            if shot["end"] - shot["start"] + 1e-6 < min_duration:
                continue
            hits.append(ClipHit(path=shot["path"], start=shot["start"], end=shot["end"], score=round(float(score), 5),
                                thumbnail=shot.get("thumbnail", ""), fps=shot["fps"], width=shot["width"],
                                height=shot["height"], rank=len(hits) + 1))
            if len(hits) == k:
                return hits
        if want >= total:
            return hits
        want = min(total, want * 4)


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
    if manifest is None:
        raise InputError(f"no clip library at {store.path}; build one with: python -m aas_core library index FOLDER --library {store.path}")
    return LibraryInfo(
        library=str(store.path),
        model=manifest["model"]["name"],
        tiny=bool(manifest["model"].get("tiny")),
        index_type=manifest["index_type"],
        files=manifest["files"],
        shots=manifest["shots"],
        skipped=manifest["skipped"],
        roots=manifest["roots"],
        created=manifest["created"],
    )


def list_shots(library: Optional[str | os.PathLike[str]] = None) -> list[dict[str, Any]]:
    """Every indexed shot (path, span, size, thumbnail), in index order."""
    return list(_load_generation(LibraryStore(library)).shots)
