"""Sample media a first-time visitor can click: short synthetic clips and character photos (made once, cached)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aas_core.fsutil import atomic_path

SAMPLE_CLIPS: dict[str, tuple[tuple[int, int, int], tuple[int, int]]] = {
    "red-ball-rolls-right.mp4": ((220, 40, 40), (1, 0)),
    "blue-box-rises.mp4": ((40, 80, 230), (0, -1)),
    "green-kite-drifts-left.mp4": ((40, 200, 60), (-1, 0)),
}
SAMPLE_PHOTOS: tuple[str, ...] = ("hero-1.png", "hero-2.png", "hero-3.png")
SIZE = (192, 128)
FRAMES = 36
FPS = 12.0


def _clip_frames(colour: tuple[int, int, int], direction: tuple[int, int]) -> np.ndarray:
    width, height = SIZE
    ys, xs = np.mgrid[0:height, 0:width]
    sky = np.linspace(200, 90, height)[:, None, None] * np.array([0.55, 0.75, 1.0])
    ground = (ys > height * 0.7)[..., None]
    background = np.where(ground, np.array([70, 120, 60]), sky).astype(np.float32)
    out = np.empty((FRAMES, height, width, 3), np.uint8)
    for i in range(FRAMES):
        f = i / (FRAMES - 1)
        cx = width / 2 + direction[0] * (f - 0.5) * width * 0.7
        cy = height / 2 + direction[1] * (f - 0.5) * height * 0.6
        inside = ((xs - cx) ** 2 + (ys - cy) ** 2) < (height * 0.14) ** 2
        out[i] = np.where(inside[..., None], np.array(colour, np.float32), background).astype(np.uint8)
    return out


def sample_clips(cache_dir: Path) -> Path:
    """A folder of three short clips (a ball rolling, a box rising, a kite drifting), written once."""
    from aas_core.video_io import write_video

    folder = cache_dir / "samples" / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (colour, direction) in SAMPLE_CLIPS.items():
        if not (folder / name).is_file():
            write_video(folder / name, _clip_frames(colour, direction), FPS)
    return folder


def sample_photos(cache_dir: Path) -> list[str]:
    """Three photos of one cartoon character from slightly different views, written once."""
    from PIL import Image, ImageDraw

    folder = cache_dir / "samples" / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(SAMPLE_PHOTOS):
        path = folder / name
        if not path.is_file():
            img = Image.new("RGB", (256, 256), (235, 225, 200))
            draw = ImageDraw.Draw(img)
            dx = (i - 1) * 18
            draw.ellipse((68 + dx, 48, 188 + dx, 176), fill=(250, 200, 150), outline=(90, 60, 40), width=3)
            draw.ellipse((100 + dx, 92, 116 + dx, 108), fill=(40, 40, 40))
            draw.ellipse((140 + dx, 92, 156 + dx, 108), fill=(40, 40, 40))
            draw.arc((104 + dx, 120, 152 + dx, 150), 10, 170, fill=(160, 40, 40), width=4)
            draw.rectangle((88 + dx, 176, 168 + dx, 256), fill=(200, 60, 60))
            draw.polygon([(64 + dx, 60), (128 + dx, 10), (192 + dx, 60)], fill=(60, 60, 160))
            with atomic_path(path, suffix=".png") as tmp:
                img.save(tmp, format="PNG")
        paths.append(str(path))
    return paths
