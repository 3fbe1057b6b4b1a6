"""Character photos: safe loading (EXIF orientation), square crops, light augmentation, captions."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from aas_core.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "MPO"})
"""Pillow format names we accept (MPO is what some phones write for JPEG)."""
MAX_PHOTOS = 100
MIN_SIDE_ABSOLUTE = 32

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {}",
    "a rendering of {}",
    "a cropped photo of {}",
    "a close-up photo of {}",
    "a bright photo of {}",
    "a good photo of {}",
    "a photo of the {}",
    "a picture of {}",
)
"""Textual-inversion caption templates (Gal et al. 2022); `{}` is the concept's token sequence."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Photo:
    """One input photo, optionally with a box (x0, y0, x1, y1, in displayed pixels) around the character."""

    path: str
    box: Optional[Box] = None


_BOX_SUFFIX = re.compile(r"^(?P<path>.+)@(?P<box>-?\d+,-?\d+,-?\d+,-?\d+)$")


def parse_photo_arg(text: str) -> Photo:
    """`photo.jpg` or `photo.jpg@x0,y0,x1,y1` (the CLI syntax) -> Photo."""
    match = _BOX_SUFFIX.match(text)
    if match is None or Path(text).exists():
        return Photo(text)
    x0, y0, x1, y1 = (int(v) for v in match.group("box").split(","))
    return Photo(match.group("path"), (x0, y0, x1, y1))


def load_photo(photo: Photo | str | os.PathLike[str]) -> "Image.Image":
    """Open a photo as upright RGB (EXIF orientation applied), cropped to its box if one is given."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not isinstance(photo, Photo):
        photo = Photo(str(photo))
    path = Path(photo.path)
    if not path.is_file():
        raise InputError(f"photo {path} does not exist or is not a file; check the path")
    try:
        with Image.open(path) as img:
            if img.format not in IMAGE_FORMATS:
                raise InputError(f"{path.name} is a {img.format} image; use jpg, png or webp photos")
            img.load()  # decode now so a truncated file fails here, not mid-training
            img = ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path.name} is not a readable image ({exc}); use jpg, png or webp photos") from exc
    if photo.box is not None:
        x0, y0, x1, y1 = photo.box
        if not (0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height):
            raise InputError(
                f"box {photo.box} does not fit inside {path.name} ({img.width}x{img.height}); "
                "give x0,y0,x1,y1 with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height"
            )
        img = img.crop((x0, y0, x1, y1))
    return img


def check_photo_size(img: "Image.Image", name: str, resolution: int) -> None:
    """Refuse photos (or boxes) so small that upscaling would only teach blur."""
    need = max(MIN_SIDE_ABSOLUTE, resolution // 2)
    if min(img.size) < need:
        raise InputError(
            f"{name} is too small ({img.width}x{img.height}); the shorter side (of the box, if given) must be "
            f"at least {need} px for training at {resolution} px: use a larger photo or a larger box"
        )


def square_crop(img: "Image.Image", resolution: int, scale: float = 1.0, centre: tuple[float, float] = (0.5, 0.5), flip: bool = False) -> "Image.Image":
    """A square of side `scale` x the short side, placed at `centre` (fractions), resized to `resolution`."""
    from PIL import Image

    side = max(1, int(round(min(img.size) * scale)))
    cx = centre[0] * (img.width - side)
    cy = centre[1] * (img.height - side)
    left, top = int(round(cx)), int(round(cy))
    out = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out


def augmented_views(img: "Image.Image", resolution: int, count: int, rng: random.Random, flip: bool = True, scale_jitter: float = 0.1) -> list["Image.Image"]:
    """`count` training views of one photo: the centre crop first, then random flips and zoomed-in crops."""
    views = [square_crop(img, resolution)]
    for _ in range(count - 1):
        scale = 1.0 - rng.uniform(0.0, scale_jitter)
        views.append(square_crop(img, resolution, scale, (rng.random(), rng.random()), flip and rng.random() < 0.5))
    return views


def load_photos(photos: Sequence[Photo | str], resolution: int) -> tuple[list["Image.Image"], list[str]]:
    """Load and check every photo; returns the images and warnings (e.g. only one photo)."""
    if not photos:
        raise InputError("no photos given; pass 3-20 photos of the character (jpg, png or webp)")
    if len(photos) > MAX_PHOTOS:
        raise InputError(f"{len(photos)} photos given; use at most {MAX_PHOTOS} (3-20 is plenty)")
    images = []
    for item in photos:
        photo = item if isinstance(item, Photo) else Photo(str(item))
        img = load_photo(photo)
        check_photo_size(img, Path(photo.path).name, resolution)
        images.append(img)
    warnings = []
    if len(images) < 3:
        warnings.append(
            f"only {len(images)} photo{'s' if len(images) > 1 else ''}: the character may be learnt together with its "
            "background and pose; 3-20 varied photos work better"
        )
    return images, warnings


def captions(tokens: str, count: int, rng: random.Random) -> list[str]:
    """`count` captions drawn from the templates around `tokens` (the expanded concept token)."""
    return [rng.choice(CAPTION_TEMPLATES).format(tokens) for _ in range(count)]


def thumbnail(img: "Image.Image", side: int = 128) -> "Image.Image":
    """A small square preview of a photo for lists and the UI."""
    return square_crop(img, side)
