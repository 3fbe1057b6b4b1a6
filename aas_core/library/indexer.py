"""The in-process indexing engine: a reader thread decodes and cuts while the main thread embeds and writes."""

from __future__ import annotations

import io
import queue
import threading
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from aas_core.errors import AASError
from aas_core.library.reader import FoundFile, ReaderSettings, SampledShot, iter_shots
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.video_io import VideoInfo, probe

EMBED_BATCH = 64
"""Frames per embedder call while indexing: large enough to keep a GPU busy, small enough for a CPU."""
MIN_EAGER_BATCH = 8
"""Smallest batch embedded early, while the reader is still decoding."""
NO_SHOT = "no shot long enough to use (shorter than the minimum shot length)"


class Sink(Protocol):
    """Where an engine hands finished files (the writer stage)."""

    def file_done(self, found: FoundFile, shots: list[dict[str, Any]], vectors: np.ndarray, thumbs: list[bytes], info: dict) -> None:
        """One file's shots (rows), their unit vectors and JPEG thumbnails."""

    def file_skipped(self, found: FoundFile, reason: str) -> None:
        """One file that cannot be indexed, and why."""


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """RGB uint8 -> JPEG bytes (thumbnails)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def shot_row(shot: SampledShot, info: VideoInfo) -> dict[str, Any]:
    """The stored metadata of one shot (the same from every engine)."""
    return {"start": round(shot.start, 4), "end": round(shot.end, 4), "fps": info.fps, "width": info.width,
            "height": info.height, "frames_sampled": shot.frames_sampled, "motion": round(shot.motion.motion, 5),
            "camera_motion": round(shot.motion.camera, 5), "subject_motion": round(shot.motion.subject, 5)}


def file_info(info: VideoInfo) -> dict[str, Any]:
    """The stored metadata of one indexed file."""
    return {"duration": info.duration, "fps": info.fps, "width": info.width, "height": info.height}


def mean_unit(vectors: np.ndarray) -> np.ndarray:
    """A shot's vector: the normalised mean of its frames' unit vectors."""
    mean = np.asarray(vectors, np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def failure_reason(exc: BaseException) -> str:
    """A skip reason for a file: our own messages as they are, anything else with its type."""
    if isinstance(exc, AASError):
        return str(exc)
    return f"could not be read ({type(exc).__name__}: {exc})" if str(exc) else f"could not be read ({type(exc).__name__})"


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
                    jpeg = encode_jpeg(shot.thumbnail)
                    shot.thumbnail = None
                    _put(out, ("shot", found, (shot, jpeg)), stop)
                _put(out, ("done", found, info), stop)
            except Exception as exc:  # noqa: BLE001 - third-party decoders raise anything (AssertionError from PySceneDetect)
                _put(out, ("error", found, failure_reason(exc)), stop)
    finally:
        _put(out, (_END, None, None), stop)


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
                raise AASError("the reader stage stopped unexpectedly; finished files were kept, run the same command again") from None


@dataclass
class _Pending:
    shot: SampledShot
    jpeg: bytes
    vector: Optional[np.ndarray] = None


def run_in_process(
    todo: list[FoundFile],
    settings: ReaderSettings,
    embedder: Any,
    sink: Sink,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> None:
    """Index `todo` files: reader thread -> batched embedder -> sink, one file at a time to the sink."""
    q: "queue.Queue" = queue.Queue(maxsize=8)
    stop = threading.Event()
    reader = threading.Thread(target=_reader_thread, args=(todo, settings, q, stop), daemon=True)
    reader.start()
    # Shots wait here until enough frames gather for one embedder batch; crops are dropped once embedded.
    waiting: list[_Pending] = []
    by_file: dict[object, list[_Pending]] = {}

    def flush() -> None:
        frames = [crop for p in waiting for crop in p.shot.crops]
        vectors = embedder.embed_images(frames, batch_size=EMBED_BATCH)
        offset = 0
        for p in waiting:
            p.vector = mean_unit(vectors[offset : offset + len(p.shot.crops)])
            offset += len(p.shot.crops)
            p.shot.crops = []
        waiting.clear()

    done = 0
    try:
        while True:
            kind, found, payload = _next_item(q, reader, cancel)
            if kind is _END:
                break
            if kind == "shot":
                pending = _Pending(*payload)
                waiting.append(pending)
                by_file.setdefault(found.path, []).append(pending)
                # Embed a full batch, or whatever is ready when the reader has nothing more yet,
                # so the embedder never idles while the reader decodes.
                ready = sum(len(p.shot.crops) for p in waiting)
                if ready >= EMBED_BATCH or (q.empty() and ready >= MIN_EAGER_BATCH):
                    flush()
                continue
            flush()
            shots = by_file.pop(found.path, [])
            if kind == "error":
                sink.file_skipped(found, payload)
            elif not shots:
                sink.file_skipped(found, NO_SHOT)
            else:
                sink.file_done(found, [shot_row(p.shot, payload) for p in shots], np.stack([p.vector for p in shots]),
                               [p.jpeg for p in shots], file_info(payload))
            done += 1
            report(on_progress, done / max(len(todo), 1) * 0.95, f"{done}/{len(todo)} {found.path.name}")
    finally:
        stop.set()
        # The reader sees `stop` at its next frame or put, and ends with us.
        reader.join()
