"""Instant characters: IP-Adapter image embeddings of a concept's photos, put into a pipeline for one shot.

Making a concept encodes its photos once with IP-Adapter's CLIP ViT-H image encoder and stores both
forms the adapters read (the pooled projection for `plain`, the penultimate patch features for `plus`
and `plus-face`, plus the features of a blank image as the unconditional side), so a shot needs no
image encoder at all: the pipeline gets `ip_adapter_image_embeds`. Each IP-Adapter character in a shot
gets its own adapter (and scale); two of them are kept apart with diffusers' IP-Adapter masks, the
first-named character on the left half of the frame, the second on the right.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, get_args

from aas_core.errors import InputError
from aas_core.limits import is_finite_number

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from aas_core.concepts.store import Concept
    from aas_core.device import Runtime

IPVariant = Literal["plus", "plain", "plus-face"]
IP_VARIANTS: tuple[str, ...] = get_args(IPVariant)
DEFAULT_IP_VARIANT: IPVariant = "plus"
"""Plus reads 257 patch features (16 image tokens): closer identity than plain's 4 tokens from one vector."""
DEFAULT_IP_SCALE = 0.6
"""Image-prompt weight: near 1 the photo's look (pose, background) overrides the text; 0.5-0.7 keeps both."""
IP_MODEL = "ip-adapter-sd15"
EMBEDS_FILE = "ip_embeds.safetensors"
MAX_IP_CHARACTERS = 2
"""Left and right halves of the frame: more IP-Adapter characters would share regions and blend."""
EMBED_KEYS = ("image_embeds", "hidden", "uncond_hidden")


def check_ip_scale(value: Any, field_name: str = "ip_scale") -> float:
    """A valid IP-Adapter scale (0..2) as float, else an InputError saying the range."""
    if not is_finite_number(value) or not 0.0 <= value <= 2.0:
        raise InputError(f"{field_name} must be a number between 0 and 2 (0.5-0.7 is typical), got {value!r}")
    return float(value)


def check_variant(value: Any) -> str:
    """A known IP-Adapter variant name, else an InputError listing them."""
    if value not in IP_VARIANTS:
        raise InputError(f"unknown IP-Adapter variant {value!r}; choose one of {', '.join(IP_VARIANTS)}")
    return str(value)


def _folder(root: Optional[str | os.PathLike[str]]) -> Path:
    from aas_core.weights import model_dir

    return model_dir(IP_MODEL, root)


def adapter_file(variant: str, root: Optional[str | os.PathLike[str]] = None) -> Path:
    """The local IP-Adapter safetensors file of one variant."""
    from aas_core.registry import get_spec

    return _folder(root) / get_spec(IP_MODEL).options["variants"][check_variant(variant)]


def image_encoder(root: Optional[str | os.PathLike[str]] = None, runtime: Optional["Runtime"] = None) -> tuple[Any, Any]:
    """IP-Adapter's CLIP image encoder and its image processor, loaded once through `aas_core.models`."""
    from aas_core import models
    from aas_core.device import pick_runtime
    from aas_core.registry import get_spec
    from aas_core.weights import load_error

    runtime = runtime or pick_runtime()
    folder = _folder(root) / get_spec(IP_MODEL).options["image_encoder"]

    def load() -> tuple[Any, Any]:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        try:
            encoder = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=runtime.dtype, use_safetensors=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise load_error(IP_MODEL, folder, exc) from exc
        size = int(encoder.config.image_size)
        # diffusers builds the same processor for IP-Adapter (CLIP mean/std, bicubic, centre crop).
        return encoder.to(runtime.torch_device).eval(), CLIPImageProcessor(size=size, crop_size=size)

    key = models.ModelKey(IP_MODEL, str(folder), runtime.device, runtime.dtype_name, "image_encoder")
    return models.get(key, load)


def encode_photos(images: Sequence["Image.Image"], root: Optional[str | os.PathLike[str]] = None,
                  runtime: Optional["Runtime"] = None) -> dict[str, "torch.Tensor"]:
    """The stored embeddings of a concept's photos: pooled (N, P), patch features (N, S, H), blank image (1, S, H)."""
    import torch

    if not images:
        raise InputError("no photos given; pass 1-20 photos of the character (jpg, png or webp)")
    encoder, processor = image_encoder(root, runtime)
    pixels = processor(images=list(images), return_tensors="pt").pixel_values.to(encoder.device, encoder.dtype)
    with torch.no_grad():
        out = encoder(pixels, output_hidden_states=True)
        blank = encoder(torch.zeros_like(pixels[:1]), output_hidden_states=True)
    # float16 on disk: 257 x 1280 features per photo are 0.66 MB instead of 1.3 MB, far below the adapter's precision.
    return {
        "image_embeds": out.image_embeds.detach().to("cpu", torch.float16).contiguous(),
        "hidden": out.hidden_states[-2].detach().to("cpu", torch.float16).contiguous(),
        "uncond_hidden": blank.hidden_states[-2].detach().to("cpu", torch.float16).contiguous(),
    }


def read_embeds(path: Path, name: str) -> dict[str, "torch.Tensor"]:
    """A concept's stored embeddings, checked for the keys and shapes `encode_photos` writes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"concept {name}: {path.name} is unreadable ({exc}); make the concept again from its photos") from exc
    if any(k not in tensors for k in EMBED_KEYS) or tensors["hidden"].ndim != 3 or tensors["image_embeds"].ndim != 2:
        raise InputError(f"concept {name}: {path.name} does not hold IP-Adapter embeddings; make the concept again from its photos")
    return tensors


def read_adapter(path: Path, cross_attention_dim: int, embeds: dict[str, "torch.Tensor"], variant: str) -> dict[str, dict]:
    """An IP-Adapter file as diffusers' `load_ip_adapter` state dict, refusing pickles and adapters of other models."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise InputError(
            f"IP-Adapter file {path} is missing; fetch it with: python -m aas_core weights download {IP_MODEL}"
        )
    state: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                part, _, rest = key.partition(".")
                if part in state:
                    state[part][rest] = f.get_tensor(key)
    except (SafetensorError, OSError) as exc:
        raise InputError(
            f"{path.name} is not a safetensors file ({exc}); pickle checkpoints (.bin, .pt, .pth) are never loaded "
            f"because unpickling can run code: use the .safetensors file of {IP_MODEL}"
        ) from exc
    _check_adapter(path.name, state, cross_attention_dim, embeds, variant)
    return state


def _check_adapter(name: str, state: dict[str, dict], cross: int, embeds: dict[str, "torch.Tensor"], variant: str) -> None:
    """Shapes must fit this UNet and these embeddings (an SDXL adapter is 2048 wide, SD1.5's text width is 768)."""
    proj, layers = state["image_proj"], state["ip_adapter"]
    first = layers.get("1.to_k_ip.weight")
    if first is None or not proj:
        raise InputError(f"{name} holds no IP-Adapter weights (image_proj.* and ip_adapter.* keys); use a file of {IP_MODEL}")
    width = int(first.shape[1])
    if width != cross:
        family = "an SDXL" if width == 2048 else f"a {width}-wide"
        raise InputError(
            f"{name} is {family} IP-Adapter (cross-attention width {width}) but this pipeline's UNet is {cross} wide "
            f"(SD1.5 is 768): use the SD1.5 files of h94/IP-Adapter (models/ip-adapter*_sd15.safetensors)"
        )
    if variant == "plain":
        wanted, have = int(proj["proj.weight"].shape[1]) if "proj.weight" in proj else -1, int(embeds["image_embeds"].shape[1])
    else:
        wanted, have = int(proj["proj_in.weight"].shape[1]) if "proj_in.weight" in proj else -1, int(embeds["hidden"].shape[2])
    if wanted != have:
        raise InputError(
            f"{name} expects {wanted}-wide image features but the concept's photos were encoded {have} wide "
            f"(another image encoder, or not a {variant} adapter): make the concept again with this {IP_MODEL}"
        )


@dataclass
class IPCharacter:
    """One IP-Adapter character of a shot: its concept, adapter variant, scale and embeddings."""

    name: str
    variant: str
    scale: float
    embeds: dict[str, "torch.Tensor"] = field(repr=False)

    def positive(self, averaged: bool) -> "torch.Tensor":
        """(1, images, ...) features its adapter reads; `averaged` folds all photos into one image (for masks)."""
        values = self.embeds["image_embeds" if self.variant == "plain" else "hidden"]
        values = values.float().mean(0, keepdim=True) if averaged else values.float()
        return values[None]

    def negative(self, averaged: bool) -> "torch.Tensor":
        """The unconditional side: zeros for plain (as diffusers does), a blank image's features for plus."""
        import torch

        positive = self.positive(averaged)
        if self.variant == "plain":
            return torch.zeros_like(positive)
        return self.embeds["uncond_hidden"].float()[None].expand_as(positive).clone()


@dataclass
class IPState:
    """IP-Adapters loaded into a pipeline for one shot: what to pass to its call."""

    characters: list[IPCharacter]

    @property
    def masked(self) -> bool:
        """Two characters: each adapter is confined to its half of the frame."""
        return len(self.characters) > 1

    def call_kwargs(self, guidance: bool, height: int, width: int, device: Any, dtype: Any) -> dict[str, Any]:
        """`ip_adapter_image_embeds` (negatives first when guidance is on) and, for two characters, their masks."""
        import torch

        embeds = []
        for character in self.characters:
            positive = character.positive(self.masked)
            both = torch.cat([character.negative(self.masked), positive]) if guidance else positive
            embeds.append(both.to(device, dtype))
        kwargs: dict[str, Any] = {"ip_adapter_image_embeds": embeds}
        if self.masked:
            kwargs["cross_attention_kwargs"] = {"ip_adapter_masks": half_masks(len(self.characters), height, width)}
        return kwargs

    def summary(self) -> list[dict[str, Any]]:
        """JSON-ready record for params.json."""
        regions = ["left half", "right half"] if self.masked else ["whole frame"]
        return [
            {"concept": c.name, "variant": c.variant, "scale": c.scale, "photos": int(c.embeds["hidden"].shape[0]), "region": r}
            for c, r in zip(self.characters, regions)
        ]


def half_masks(count: int, height: int, width: int) -> list["torch.Tensor"]:
    """One (1, 1, H, W) mask per adapter: vertical strips of the frame, left to right."""
    import numpy as np
    from diffusers.image_processor import IPAdapterMaskProcessor
    from PIL import Image

    images = []
    for i in range(count):
        mask = np.zeros((height, width), np.uint8)
        mask[:, i * width // count : (i + 1) * width // count] = 255
        images.append(Image.fromarray(mask))
    masks = IPAdapterMaskProcessor().preprocess(images, height=height, width=width)
    return [masks[i : i + 1] for i in range(count)]


def ip_characters(concepts: Sequence["Concept"], scale: Optional[float] = None) -> list[IPCharacter]:
    """The IP-Adapter characters among `concepts` (their own scale, or `scale` for all), at most two."""
    chosen = [c for c in concepts if c.uses_ip]
    if len(chosen) > MAX_IP_CHARACTERS:
        names = ", ".join(c.token for c in chosen)
        raise InputError(
            f"{len(chosen)} instant (IP-Adapter) characters in one shot ({names}): at most {MAX_IP_CHARACTERS} can be kept "
            "apart (left and right halves); train the others with TimeInv (concept train --method timeinv) "
            "or split the shot"
        )
    if scale is not None:
        scale = check_ip_scale(scale)
    return [IPCharacter(c.name, c.ip_variant, c.ip_scale if scale is None else scale, c.ip_embeds()) for c in chosen]


def read_adapters(pipe: Any, characters: Sequence[IPCharacter], root: Optional[str | os.PathLike[str]]) -> list[dict]:
    """Each character's adapter file read and checked against `pipe`'s UNet and the character's embeddings."""
    cross = int(pipe.unet.config.cross_attention_dim)
    return [read_adapter(adapter_file(c.variant, root), cross, c.embeds, c.variant) for c in characters]


def load_into(pipe: Any, characters: Sequence[IPCharacter], states: Sequence[dict]) -> IPState:
    """Load one IP-Adapter per character into `pipe` (no image encoder: embeddings are precomputed) and set scales."""
    pipe.load_ip_adapter(
        list(states), subfolder=[""] * len(states), weight_name=[f"{c.variant}.safetensors" for c in characters],
        image_encoder_folder=None,
    )
    pipe.set_ip_adapter_scale([c.scale for c in characters])
    return IPState(list(characters))


def unload(pipe: Any) -> None:
    """Take every IP-Adapter out of `pipe`: attention processors, image projection and feature extractor restored."""
    pipe.unload_ip_adapter()


PHOTO_SIDE = 512
"""Stored photo crops: SD1.5's native side, so VACE references and the identity metric see the same photos."""


def make_ip_concept(
    name: str,
    class_word: str,
    photos: Sequence[Any],
    ip_scale: float = DEFAULT_IP_SCALE,
    variant: str = DEFAULT_IP_VARIANT,
    root: Optional[str | os.PathLike[str]] = None,
    overwrite: bool = False,
    runtime: Optional["Runtime"] = None,
) -> "Concept":
    """An instant character: photos and their IP-Adapter embeddings saved as concept `name` (seconds, no training)."""
    import warnings

    from aas_core.concepts.photos import Photo, load_photos, square_crop
    from aas_core.concepts.store import Concept, check_free, check_name, write_concept
    from aas_core.registry import BACKEND_BASE_MODEL, get_spec
    from aas_core.weights import is_tiny

    check_name(name)
    class_word = (class_word or "").strip()
    if not class_word:
        raise InputError("give a class word (e.g. woman, cat, robot): prompts read <name> as that word plus the photos")
    ip_scale, variant = check_ip_scale(ip_scale, "ip-scale"), check_variant(variant)
    check_free(name, root, overwrite)
    photo_list = [p if isinstance(p, Photo) else Photo(str(p)) for p in photos]
    # The encoder sees 224 px: a photo (or box) down to 112 px still carries a face.
    images, notes = load_photos(photo_list, 224)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    crops = [square_crop(img, PHOTO_SIDE) for img in images]
    embeds = encode_photos(crops, root, runtime)
    base = BACKEND_BASE_MODEL["animatediff"]
    concept = Concept(
        name=name, class_word=class_word, buckets=0, vectors=0, dim=0, base_model=base,
        base_hub_id=get_spec(base).hub_id, method="ip-adapter", ip_scale=ip_scale, ip_variant=variant,
        tiny=is_tiny(IP_MODEL, root),
        settings={"photos": [{"file": Path(p.path).name, "box": p.box} for p in photo_list], "encoder": IP_MODEL},
    )
    return write_concept(concept, None, root, overwrite=overwrite, photos=crops, ip_embeds=embeds)
