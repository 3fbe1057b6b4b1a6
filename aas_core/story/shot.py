"""`run_shot`: the one place a shot is made (depth -> generate -> comparison -> metrics), resumable per folder.

The story runner, the app's Compare tab and its per-shot buttons all call it. A shot folder holds:
  <generate folder>/     params.json, shot.mp4, frames/ (written atomically by `generate`)
  comparison.mp4         source | depth | result, side by side
  done.json              written last: the shot is finished (a later call returns it at once)
  metrics.json           the shot's metrics, keyed by the metric models
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from aas_core.depth.estimators import DEFAULT_ESTIMATOR
from aas_core.errors import AASError
from aas_core.fsutil import atomic_write_json, json_digest
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.registry import DEFAULT_CLIP
from aas_core.story.outcome import CACHE_VERSION, COMPARISON_FILE, DONE_FILE, METRICS_FILE, read_json

if TYPE_CHECKING:
    from aas_core.concepts.store import Concept
    from aas_core.depth.video import DepthVideo
    from aas_core.device import Runtime
    from aas_core.generate import ShotSpec
    from aas_core.story.schema import ClipRef

# Shares of a shot's progress bar: depth, then generation, then comparison and metrics.
DEPTH_SHARE, GENERATE_SHARE, COMPARISON_AT, METRICS_AT = 0.2, 0.65, 0.85, 0.9


@dataclass
class ShotRequest:
    """One shot to make: generation settings, the motion source span, depth settings, characters."""

    spec: "ShotSpec"
    clip: "ClipRef"
    """Absolute path and span of the motion source."""
    estimator: str = DEFAULT_ESTIMATOR
    depth_options: dict[str, Any] = field(default_factory=dict)
    """Further `depth_from_clip` keyword arguments (smoothing, fit, speed, normalize_mode...)."""
    concepts: Sequence[Union[str, "Concept"]] = ()
    """Characters used in the prompt: concept names (loaded from the weights folder) or loaded concepts."""
    metrics_prompt: Optional[str] = None
    """Text the CLIP metrics score against (default: the spec's prompt)."""

    def depth_kwargs(self) -> dict[str, Any]:
        """`depth_from_clip` keyword arguments besides the clip span (frames and size follow the spec)."""
        return {"estimator": self.estimator, "frames": int(self.spec.frames or 0), "size": (self.spec.width, self.spec.height),
                **self.depth_options}


@dataclass
class ShotRun:
    """A finished shot: its files, frame count, timing and metrics."""

    folder: str
    """The shot folder (done.json, comparison.mp4, metrics.json)."""
    generation: str
    """generate()'s folder inside it (params.json, shot.mp4, frames/)."""
    video: str
    comparison: str
    frames: int
    fps: float
    seconds: float
    tiny: bool
    cached: bool
    """True when the shot was already finished and nothing ran."""
    metrics: Optional[dict[str, Any]] = None
    """Metric values and models; {"error": ...} when they could not be computed; None when not asked for."""

    def record(self) -> dict[str, Any]:
        """What done.json holds (also the ShotOutcome fields of a run)."""
        return {"folder": self.generation, "video": self.video, "comparison": self.comparison, "frames": self.frames,
                "fps": self.fps, "seconds": self.seconds, "tiny": self.tiny}

    def load_frames(self) -> np.ndarray:
        """The generated video's frames, (T, H, W, 3) uint8."""
        return decode(Path(self.video))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def run_shot(
    request: ShotRequest,
    folder: str | os.PathLike[str],
    *,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional["Runtime"] = None,
    depth_cache: Optional[str | os.PathLike[str]] = None,
    metrics: bool = True,
    clip_model: str = DEFAULT_CLIP,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> ShotRun:
    """Make one shot in `folder`: depth of the clip span, generation, comparison video, metrics.

    A folder whose shot is finished returns at once (`cached`); one killed after generation keeps
    that generation. Metric failures are recorded in `metrics["error"]`, never fail the shot.
    """
    from aas_core.device import pick_runtime

    runtime = runtime or pick_runtime()
    folder = Path(folder).absolute()
    began = time.perf_counter()
    # 1. A finished shot: nothing to make.
    done = read_json(folder / DONE_FILE)
    depth = None
    if done is not None:
        result = ShotRun(folder=str(folder), generation=done["folder"], video=done["video"], comparison=done["comparison"],
                         frames=int(done["frames"]), fps=float(done["fps"]), seconds=float(done["seconds"]),
                         tiny=bool(done.get("tiny")), cached=True)
    else:
        # 2. Depth of the clip span (cached on disk by content and settings).
        report(on_progress, 0.0, "depth")
        depth = _depth(request, weights_root, runtime, depth_cache, lambda f, m: report(on_progress, DEPTH_SHARE * f, m), cancel)
        if cancel is not None:
            cancel.check()
        # 3. Generation, unless a killed run already finished it.
        generated, frames, tiny = _generate(request, depth, folder, weights_root, runtime, on_progress, cancel)
        # 4. Comparison video, then done.json last: present = complete.
        report(on_progress, COMPARISON_AT, "comparison video")
        _comparison(depth, frames, folder / COMPARISON_FILE, float(request.spec.fps))
        result = ShotRun(folder=str(folder), generation=str(generated), video=str(generated / "shot.mp4"),
                         comparison=str(folder / COMPARISON_FILE), frames=int(len(frames)), fps=float(request.spec.fps),
                         seconds=round(time.perf_counter() - began, 3), tiny=tiny, cached=False)
        atomic_write_json(folder / DONE_FILE, result.record())
    # 5. Metrics, computed once per (result, metric models).
    if metrics:
        if cancel is not None:
            cancel.check()
        report(on_progress, METRICS_AT, "metrics")
        result.metrics = _metrics(request, result, depth, weights_root, runtime, depth_cache, clip_model)
    report(on_progress, 1.0, "already done" if result.cached else "done")
    return result


def decode(path: Path) -> np.ndarray:
    """Every frame of a video file, (T, H, W, 3) uint8."""
    from aas_core.video_io import iter_frames

    return np.stack([f.rgb for f in iter_frames(path)])


def finished_generation(folder: Path) -> Optional[Path]:
    """A complete generate() folder inside `folder` (written atomically, so present = complete)."""
    from aas_core.generate.run import PARAMS_FILE, VIDEO_FILE

    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and not child.name.startswith(".") and (child / PARAMS_FILE).is_file() and (child / VIDEO_FILE).is_file():
            return child
    return None


def _depth(request: ShotRequest, weights_root: Any, runtime: "Runtime", cache: Any, progress: ProgressFn,
           cancel: Optional[CancelToken] = None) -> "DepthVideo":
    from aas_core.depth import depth_from_clip

    return depth_from_clip(
        request.clip.path, start=request.clip.start, end=request.clip.end, weights_root=weights_root, runtime=runtime,
        cache_dir=cache, on_progress=progress, cancel=cancel, **request.depth_kwargs(),
    )


def _concepts(request: ShotRequest, weights_root: Any) -> list["Concept"]:
    from aas_core.concepts.store import load_concept

    return [load_concept(c, weights_root) if isinstance(c, str) else c for c in request.concepts]


def _generate(request: ShotRequest, depth: "DepthVideo", folder: Path, weights_root: Any, runtime: "Runtime",
              on_progress: Optional[ProgressFn], cancel: Optional[CancelToken]) -> tuple[Path, np.ndarray, bool]:
    """(generate folder, frames, tiny): a new generation, or the one a killed run finished."""
    from aas_core.generate import generate

    generated = finished_generation(folder)
    if generated is not None:
        return generated, decode(generated / "shot.mp4"), bool((read_json(generated / "params.json") or {}).get("tiny"))
    result = generate(
        request.spec, depth, concepts=_concepts(request, weights_root), cancel=cancel, weights_root=weights_root,
        runtime=runtime, out_dir=folder, on_progress=lambda f, m: report(on_progress, DEPTH_SHARE + GENERATE_SHARE * f, m),
    )
    return Path(result.folder), result.frames, result.tiny


def _comparison(depth: "DepthVideo", frames: np.ndarray, path: Path, fps: float) -> None:
    from aas_core.stitch import comparison_video

    source = depth.rgb if depth.rgb is not None else depth.as_uint8()[..., None].repeat(3, 3)
    comparison_video(source, depth.frames, frames, path, fps)


def _metrics(request: ShotRequest, result: ShotRun, depth: Optional["DepthVideo"], weights_root: Any, runtime: "Runtime",
             depth_cache: Any, clip_model: str) -> dict[str, Any]:
    """The shot's metrics from metrics.json when its key matches, else computed and written there."""
    from aas_core.depth import load_estimator
    from aas_core.metrics import shot_metrics

    path = Path(result.folder) / METRICS_FILE
    key = json_digest({"v": CACHE_VERSION, "clip": clip_model, "depth": request.estimator})
    cached = read_json(path)
    if cached is not None and cached.get("key") == key:
        return cached
    try:
        depth = depth or _depth(request, weights_root, runtime, depth_cache, lambda f, m: None)
        estimator = load_estimator(request.estimator, weights_root, runtime)
        photos = [np.asarray(img) for c in _concepts(request, weights_root) for img in c.reference_images()]
        values = shot_metrics(
            result.load_frames(), request.metrics_prompt or request.spec.prompt, condition_depth=depth.frames,
            depth_estimate=estimator.predict, depth_model=request.estimator, concept_photos=photos, clip_model=clip_model,
            weights_root=weights_root, runtime=runtime,
        )
    except (AASError, ValueError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    data = {"key": key, **values.to_dict()}
    atomic_write_json(path, data)
    return data
