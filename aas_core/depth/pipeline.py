"""`depth_from_clip`: clip span -> conditioning frames -> batched depth -> one stable scale -> cached DepthVideo."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from aas_core.depth.clip import FIT_MODES, check_size, load_conditioning_clip, resolve_span
from aas_core.depth.estimators import DEFAULT_ESTIMATOR, check_estimator, load_estimator, weights_fingerprint
from aas_core.depth.stabilize import NORMALIZE_MODES, PERCENTILES, flicker, normalize, relative_flicker
from aas_core.depth.video import META_FILE, DepthVideo
from aas_core.errors import InputError
from aas_core.fsutil import atomic_dir, file_digest, json_digest
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.video_io import probe
from aas_core.weights import weights_dir

if TYPE_CHECKING:
    from aas_core.device import Runtime

DEFAULT_SMOOTHING = 0.5
"""Temporal Gaussian sigma in output frames: damps residual flicker, too small to smear real motion."""
MAX_SMOOTHING = 8.0
CACHE_VERSION = 1
"""Bump when the pipeline's output changes for the same inputs, so old cache entries stop matching."""

DIGEST_CACHE_SIZE = 1024
"""Source digests remembered per process (a long-running app sees many uploads; each entry is ~200 bytes)."""


def default_cache_dir(weights_root: Optional[str | os.PathLike[str]] = None) -> Path:
    """`$AAS_CACHE_DIR/depth` when set, else `<weights folder>/.cache/depth` (survives restarts)."""
    env = os.environ.get("AAS_CACHE_DIR")
    return (Path(env).expanduser().absolute() if env else weights_dir(weights_root) / ".cache") / "depth"


def source_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime) for this process."""
    path = Path(path).absolute()
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=DIGEST_CACHE_SIZE)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """Content digest; size and mtime are part of the cache key so an edited file is hashed again."""
    return file_digest(path)


def depth_from_clip(
    path: str | os.PathLike[str],
    start: Optional[float] = None,
    end: Optional[float] = None,
    frames: int = 16,
    size: tuple[int, int] = (512, 512),
    speed: float = 1.0,
    fit: str = "crop",
    estimator: str = DEFAULT_ESTIMATOR,
    smoothing: float = DEFAULT_SMOOTHING,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional["Runtime"] = None,
    cache_dir: Optional[str | os.PathLike[str]] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    *,
    normalize_mode: str = "global",
    use_cache: bool = True,
    batch_size: Optional[int] = None,
) -> DepthVideo:
    """The depth sequence guiding one shot: `frames` frames of [start, end) at `size` (w, h), 1 = near.

    Results are cached on disk by source content + span + settings + estimator weights, so asking
    again (even after a restart) returns at once. `smoothing` is a temporal Gaussian sigma in frames.
    """
    from aas_core.device import pick_runtime

    # 1. Check the settings (and that the estimator's weights are there) before touching the clip.
    width, height = _check(estimator, size, fit, smoothing, normalize_mode)
    runtime = runtime or pick_runtime()
    fingerprint = weights_fingerprint(estimator, weights_root)  # fails fast, naming the download command

    # 2. The cache key: source content + span + every setting that changes the result + the weights.
    report(on_progress, 0.0, "reading the clip")
    info = probe(path)
    span = resolve_span(info, start, end)
    settings = {
        "frames": int(frames),
        "size": [width, height],
        "speed": float(speed),
        "fit": fit,
        "smoothing": float(smoothing),
        "normalize": normalize_mode,
        "percentiles": list(PERCENTILES),
        "weights": {k: fingerprint[k] for k in ("hub_id", "tiny")},
        "runtime": {"device": runtime.device, "dtype": runtime.dtype_name},
    }
    digest = source_digest(path)
    key = json_digest(
        {"v": CACHE_VERSION, "source": digest, "span": span, "settings": settings, "weights": fingerprint}
    )
    entry = (Path(cache_dir) if cache_dir is not None else default_cache_dir(weights_root)) / key
    cached = _cached(entry, path, on_progress) if use_cache else None
    if cached is not None:
        return cached

    # 3. Decode the conditioning frames and estimate raw nearness in batches.
    began = time.perf_counter()
    clip = load_conditioning_clip(path, span[0], span[1], frames, (width, height), speed, fit)
    decoded_s = time.perf_counter() - began
    report(on_progress, 0.15, f"decoded {len(clip.rgb)} frames; loading {estimator}")
    raw = _estimate(clip.rgb, load_estimator(estimator, weights_root, runtime), batch_size, on_progress, cancel)

    # 4. One stable scale for the whole clip; stored as float16 on disk, so round now and a cache hit
    #    returns exactly what a fresh run does.
    mask = clip.content_mask() if fit == "pad" else None
    depth = normalize(raw, normalize_mode, smoothing, mask).astype(np.float16).astype(np.float32)
    baseline = normalize(raw, "per-frame", 0.0, mask)
    result = DepthVideo(
        frames=depth,
        fps=clip.fps,
        source=str(path),
        span=clip.span,
        estimator=estimator,
        settings=settings,
        rgb=clip.rgb,
        stats={
            "flicker": flicker(depth),
            "relative_flicker": relative_flicker(depth),
            "baseline_per_frame_minmax": {"flicker": flicker(baseline), "relative_flicker": relative_flicker(baseline)},
            "source_sha256": digest,
            "source_times": [round(t, 4) for t in clip.times],
            "source_info": {
                "width": info.width, "height": info.height, "fps": info.fps, "duration": info.duration,
                "rotation": info.rotation, "codec": info.codec, "pix_fmt": info.pix_fmt,
            },
            "seconds": {"decode": round(decoded_s, 3), "total": round(time.perf_counter() - began, 3)},
            "cache_key": key,
            "cache_hit": False,
        },
        warnings=list(clip.warnings),
    )
    # 5. Keep it (atomically: a killed run leaves no half entry).
    if use_cache:
        with atomic_dir(entry, overwrite=True) as tmp:
            result.save(tmp)
    report(on_progress, 1.0, "depth ready")
    return result


def _check(estimator: str, size: tuple[int, int], fit: str, smoothing: float, normalize_mode: str) -> tuple[int, int]:
    """(width, height) once every setting is valid; an InputError naming the allowed values otherwise."""
    check_estimator(estimator)
    width, height = check_size(size)
    if fit not in FIT_MODES:
        raise InputError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    if not 0 <= smoothing <= MAX_SMOOTHING:
        raise InputError(f"smoothing is a temporal sigma in frames between 0 and {MAX_SMOOTHING:g}, got {smoothing}")
    if normalize_mode not in NORMALIZE_MODES:
        raise InputError(f"normalize_mode must be one of {', '.join(NORMALIZE_MODES)}, got {normalize_mode!r}")
    return width, height


def _cached(entry: Path, path: str | os.PathLike[str], on_progress: Optional[ProgressFn]) -> Optional[DepthVideo]:
    """The cache entry's DepthVideo, or None (missing, or damaged: then it is recomputed and replaced)."""
    if not (entry / META_FILE).is_file():
        return None
    try:
        cached = DepthVideo.load(entry)
    except InputError:
        return None
    cached.source = str(path)
    cached.stats["cache_hit"] = True
    report(on_progress, 1.0, "depth from cache")
    return cached


def _estimate(rgb: np.ndarray, model: Any, batch_size: Optional[int], on_progress: Optional[ProgressFn],
              cancel: Optional[CancelToken]) -> np.ndarray:
    """Raw nearness of every frame, batch by batch (cancellable between batches)."""
    batch = batch_size or model.default_batch
    raw_batches = []
    for i in range(0, len(rgb), batch):
        if cancel is not None:
            cancel.check()
        raw_batches.append(model.predict_batch(rgb[i : i + batch]))
        done = min(i + batch, len(rgb))
        report(on_progress, 0.15 + 0.8 * done / len(rgb), f"depth {done}/{len(rgb)} frames")
    return np.concatenate(raw_batches)
