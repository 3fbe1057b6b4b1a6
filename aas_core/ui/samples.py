"""Sample media a first-time visitor can click: three short cuts and three stills of Big Buck Bunny (CC-BY 3.0).

The files ship inside the package (`assets/`, read-only, served to every visitor); `make_samples` rebuilds them
from the film: `python -m aas_core.ui.samples bigbuckbunny.mp4`.
"""

from __future__ import annotations

import sys
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "assets"
"""The app's public sample folder: clips/ and photos/."""
CREDIT = ("Sample footage: *Big Buck Bunny* (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org, "
          "licensed under [CC-BY 3.0](https://creativecommons.org/licenses/by/3.0/); cut and scaled down.")
SAMPLE_CLIPS: dict[str, tuple[float, float]] = {
    "bunny-emerges.mp4": (0.0, 1.76),
    "bunny-stretches.mp4": (1.76, 3.52),
    "bunny-yawns.mp4": (3.52, 5.28),
}
"""Cut name -> span (seconds) in the source film."""
SAMPLE_PHOTOS: dict[str, float] = {"bunny-1.jpg": 1.0, "bunny-2.jpg": 3.0, "bunny-3.jpg": 4.8}
"""Still name -> time (seconds) of the frame the character is cropped from."""
SAMPLE_CHARACTER = ("bunny", "rabbit")
"""The sample character made from those stills: its name (the prompt token <bunny>) and class word."""
SIZE = (320, 180)
FPS_DIVISOR = 2
"""Keep every second frame: 12.5 fps is plenty for motion retrieval and keeps the files small."""
PHOTO_BOX = (0.08, 0.12, 0.5, 0.9)
"""Crop of the character in the source frame (left, top, right, bottom as fractions)."""


def sample_clips(_cache_dir: object = None) -> Path:
    """The folder of sample clips."""
    return SAMPLES_DIR / "clips"


def sample_photos(_cache_dir: object = None) -> list[str]:
    """The sample character's photos."""
    return [str(SAMPLES_DIR / "photos" / name) for name in SAMPLE_PHOTOS]


def make_samples(source: str | Path, folder: Path = SAMPLES_DIR) -> list[Path]:
    """Cut the sample clips and stills out of `source` (the Big Buck Bunny film) into `folder`."""
    import numpy as np
    from PIL import Image

    from aas_core.fsutil import atomic_path
    from aas_core.video_io import iter_frames, probe, write_video

    fps = probe(source).fps / FPS_DIVISOR
    written = []
    for name, (start, end) in SAMPLE_CLIPS.items():
        frames = [np.asarray(Image.fromarray(f.rgb).resize(SIZE, Image.LANCZOS))
                  for i, f in enumerate(iter_frames(source, start, end)) if i % FPS_DIVISOR == 0]
        written.append(write_video(folder / "clips" / name, frames, fps))
    for name, at in SAMPLE_PHOTOS.items():
        frame = next(iter_frames(source, at, at + 0.2)).rgb
        h, w = frame.shape[:2]
        box = (int(PHOTO_BOX[0] * w), int(PHOTO_BOX[1] * h), int(PHOTO_BOX[2] * w), int(PHOTO_BOX[3] * h))
        path = folder / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".jpg") as tmp:
            Image.fromarray(frame).crop(box).resize((256, 256), Image.LANCZOS).save(tmp, format="JPEG", quality=85)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in make_samples(sys.argv[1]):
        print(written_path, written_path.stat().st_size)
