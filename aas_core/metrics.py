"""Per-shot quality metrics: CLIP text-video similarity, frame consistency, depth adherence, identity.

Each metric names the registry model it uses (recorded in the result): a CLIP embedder for the first,
second and fourth, a depth estimator for depth adherence. Scores are cosines or correlations in [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from aas_core.errors import InputError
from aas_core.registry import DEFAULT_CLIP
from aas_core.sampling import spread_indices
from aas_core.tokens import strip_tokens

if TYPE_CHECKING:
    from aas_core.device import Runtime
    from aas_core.library.embed import ClipEmbedder

MAX_METRIC_FRAMES = 16
"""Frames sampled (evenly) per shot: the scores are means, more frames barely change them."""

DepthEstimateFn = Callable[[np.ndarray], np.ndarray]
"""(T, H, W, 3) uint8 frames -> (T, H', W') depth in [0, 1] (1 = near)."""


def even_indices(count: int, limit: int = MAX_METRIC_FRAMES) -> np.ndarray:
    """Up to `limit` evenly spaced indices in range(count), ends included."""
    return spread_indices(count, limit)


clip_text = strip_tokens
"""A prompt as CLIP should read it (`aas_core.tokens.strip_tokens`, kept under the name callers use)."""


def text_video_similarity(embedder: "ClipEmbedder", frames: Sequence[np.ndarray], text: str) -> float:
    """Mean CLIP cosine between `text` and the frames (a CLIP score without the x100 scaling)."""
    return _text_score(embedder.embed_images(list(frames)), embedder.embed_texts([clip_text(text)])[0])


def frame_consistency(embedder: "ClipEmbedder", frames: Sequence[np.ndarray]) -> float:
    """Mean CLIP image cosine of consecutive frames (1.0 for a single frame)."""
    return _consistency(embedder.embed_images(list(frames)))


def character_identity(embedder: "ClipEmbedder", frames: Sequence[np.ndarray], photos: Sequence[np.ndarray]) -> float:
    """Mean CLIP image cosine between the concept photos and the frames."""
    if len(photos) == 0:
        raise InputError("character identity needs at least one concept photo")
    return _identity(embedder.embed_images(list(frames)), embedder.embed_images(list(photos)))


def _text_score(images: np.ndarray, text: np.ndarray) -> float:
    if len(images) == 0:
        raise InputError("no frames to score")
    return float(np.mean(images @ text))


def _consistency(images: np.ndarray) -> float:
    if len(images) < 2:
        return 1.0
    return float(np.mean(np.sum(images[1:] * images[:-1], axis=1)))


def _identity(images: np.ndarray, photos: np.ndarray) -> float:
    return float(np.mean(images @ photos.T))


def _resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (depth.shape[1], depth.shape[0]) == size:
        return depth.astype(np.float32)
    return np.asarray(Image.fromarray(depth.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def _flat(values: np.ndarray) -> bool:
    # Relative test: raw estimator output can be tiny in absolute terms (1e-7) yet full of structure.
    return bool(values.std() <= 1e-5 * float(np.abs(values).max()) or not np.isfinite(values).all())


def depth_adherence(condition: np.ndarray, estimated: np.ndarray) -> float:
    """Mean per-frame Pearson correlation between conditioning depth and depth estimated on the result.

    Both are (T, H, W); the estimate is resized to the condition's size and matched by relative time.
    Correlation ignores the scale and shift that relative depth estimators leave free. A flat frame
    (no structure to follow) counts as 0.
    """
    condition, estimated = np.asarray(condition, np.float32), np.asarray(estimated, np.float32)
    if condition.ndim != 3 or estimated.ndim != 3 or not len(condition) or not len(estimated):
        raise InputError(f"depth adherence needs (T, H, W) arrays, got {condition.shape} and {estimated.shape}")
    size = (condition.shape[2], condition.shape[1])
    scores = []
    for t in range(len(estimated)):
        cond = condition[min(len(condition) - 1, round(t * len(condition) / len(estimated)))].ravel()
        est = _resize_depth(estimated[t], size).ravel()
        if _flat(cond) or _flat(est):
            scores.append(0.0)
            continue
        scores.append(float(np.corrcoef(cond, est)[0, 1]))
    return float(np.mean(scores))


@dataclass
class ShotMetrics:
    """The metrics of one generated shot and the models that computed them."""

    clip_text_similarity: float
    frame_consistency: float
    depth_adherence: Optional[float] = None
    character_identity: Optional[float] = None
    frames_scored: int = 0
    models: dict[str, str] = field(default_factory=dict)
    tiny: bool = False
    """Computed with tiny random-weight models: the numbers only prove the pipeline runs."""

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def shot_metrics(
    frames: np.ndarray,
    prompt: str,
    condition_depth: Optional[np.ndarray] = None,
    depth_estimate: Optional[DepthEstimateFn] = None,
    depth_model: str = "",
    concept_photos: Sequence[np.ndarray] = (),
    clip_model: str = DEFAULT_CLIP,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional["Runtime"] = None,
) -> ShotMetrics:
    """Every metric of one shot; depth adherence needs `condition_depth` and `depth_estimate`."""
    from aas_core.library.embed import ClipEmbedder

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise InputError(f"shot frames must be (T, H, W, 3), got {frames.shape}")
    index = even_indices(len(frames))
    picked = frames[index]
    embedder = ClipEmbedder.load(clip_model, weights_root=weights_root, runtime=runtime)
    images = embedder.embed_images(list(picked))
    models = {"clip_text_similarity": clip_model, "frame_consistency": clip_model}
    adherence = None
    if condition_depth is not None and depth_estimate is not None:
        condition = np.asarray(condition_depth)
        if len(condition) == len(frames):
            condition = condition[index]
        adherence = depth_adherence(condition, depth_estimate(picked))
        models["depth_adherence"] = depth_model
    identity = None
    if len(concept_photos):
        identity = _identity(images, embedder.embed_images(list(concept_photos)))
        models["character_identity"] = clip_model
    return ShotMetrics(
        clip_text_similarity=_text_score(images, embedder.embed_texts([clip_text(prompt)])[0]),
        frame_consistency=_consistency(images),
        depth_adherence=adherence,
        character_identity=identity,
        frames_scored=len(picked),
        models=models,
        tiny=embedder.tiny,
    )
