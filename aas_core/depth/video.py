"""`DepthVideo`: the depth sequence that guides one shot, with its provenance; saved as npy + JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from aas_core.errors import InputError
from aas_core.fsutil import atomic_path, atomic_write_json

DEPTH_FILE = "depth.npy"
META_FILE = "depth.json"
RGB_FILE = "rgb.npy"


@dataclass
class DepthVideo:
    """Per-frame depth in [0, 1] (1 = near), shape (T, H, W) float32, plus where it came from."""

    frames: np.ndarray
    fps: float
    source: str = ""
    span: tuple[float, float] = (0.0, 0.0)
    estimator: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    rgb: Optional[np.ndarray] = None
    """The conditioning clip's RGB frames (T, H, W, 3) uint8, kept for previews and comparisons."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Measured facts (flicker figures, source timestamps, source digest), not inputs."""
    warnings: list[str] = field(default_factory=list)
    """Things the user should know (e.g. frames held because the span was short)."""

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.float32)
        if self.frames.ndim != 3 or min(self.frames.shape) == 0:
            raise InputError(f"depth frames must be (T, H, W) with T, H, W > 0, got {self.frames.shape}")
        if self.rgb is not None and self.rgb.shape[:3] != self.frames.shape:
            raise InputError(f"rgb frames {self.rgb.shape} do not match depth {self.frames.shape}")
        self.span = (float(self.span[0]), float(self.span[1]))

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    def as_uint8(self) -> np.ndarray:
        """(T, H, W) uint8 grayscale depth, for control images and previews."""
        return np.clip(np.round(self.frames * 255.0), 0, 255).astype(np.uint8)

    def metadata(self) -> dict[str, Any]:
        """Everything but the pixel arrays, JSON-ready."""
        meta = asdict(self)
        meta.pop("frames")
        meta.pop("rgb")
        meta.update(num_frames=self.num_frames, width=self.size[0], height=self.size[1])
        return meta

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `depth.npy` (+ `rgb.npy`) and `depth.json` into `folder`, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / DEPTH_FILE, suffix=".npy") as tmp:
            np.save(tmp, self.frames.astype(np.float16))
        if self.rgb is not None:
            with atomic_path(folder / RGB_FILE, suffix=".npy") as tmp:
                np.save(tmp, self.rgb.astype(np.uint8))
        atomic_write_json(folder / META_FILE, self.metadata())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "DepthVideo":
        """Read a folder written by `save` (no pickle: plain arrays and JSON only)."""
        folder = Path(folder)
        if not (folder / DEPTH_FILE).is_file() or not (folder / META_FILE).is_file():
            raise InputError(
                f"{folder} is not a depth folder (needs {DEPTH_FILE} and {META_FILE}); "
                "make one with: python -m aas_core depth CLIP --out DIR"
            )
        try:
            meta = json.loads((folder / META_FILE).read_text())
            frames = np.load(folder / DEPTH_FILE, allow_pickle=False)
            rgb = np.load(folder / RGB_FILE, allow_pickle=False) if (folder / RGB_FILE).is_file() else None
        except (OSError, ValueError) as exc:
            raise InputError(f"{folder} holds a damaged depth sequence ({exc}); recreate it with the depth command") from exc
        return cls(
            frames=frames,
            fps=float(meta["fps"]),
            source=meta.get("source", ""),
            span=tuple(meta.get("span", (0.0, 0.0))),
            estimator=meta.get("estimator", ""),
            settings=meta.get("settings", {}),
            rgb=rgb,
            stats=meta.get("stats", {}),
            warnings=list(meta.get("warnings", [])),
        )
