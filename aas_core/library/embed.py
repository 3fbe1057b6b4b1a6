"""CLIP embedder (open_clip): images and texts to L2-normalised vectors, loaded once per key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from aas_core import models
from aas_core.device import Runtime, pick_runtime
from aas_core.errors import WeightsCorruptError
from aas_core.registry import DEFAULT_CLIP, get_spec
from aas_core.weights import is_tiny, model_dir


def weights_fingerprint(folder: Path) -> str:
    """Cheap identity of a model's weights (size + first 4 MiB), recorded in every index built with it."""
    weights = folder / "open_clip_model.safetensors"
    h = hashlib.sha256(str(weights.stat().st_size).encode())
    with open(weights, "rb") as fh:
        h.update(fh.read(4 << 20))
    return h.hexdigest()[:16]


def center_crop_resize(image: np.ndarray, side: int) -> np.ndarray:
    """Resize the short side to `side` (bicubic) and crop the centre square, as CLIP was trained."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return image
    scale = side / min(h, w)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    resized = np.asarray(Image.fromarray(image).convert("RGB").resize((nw, nh), Image.BICUBIC))
    top, left = (nh - side) // 2, (nw - side) // 2
    return resized[top : top + side, left : left + side]


@dataclass
class ClipEmbedder:
    """A loaded open_clip model with its tokenizer and preprocessing constants."""

    name: str
    model: Any
    tokenizer: Any
    runtime: Runtime
    image_size: int
    mean: np.ndarray
    std: np.ndarray
    embed_dim: int
    fingerprint: str
    tiny: bool

    @classmethod
    def load(
        cls,
        name: str = DEFAULT_CLIP,
        weights_root: Optional[str | os.PathLike[str]] = None,
        runtime: Optional[Runtime] = None,
    ) -> "ClipEmbedder":
        """Load (or reuse, through the model owner) the CLIP model `name` from the weights folder."""
        spec = get_spec(name)
        if spec.kind != "clip":
            raise ValueError(f"{name} is a {spec.kind} model, not a CLIP embedder")
        folder = model_dir(name, weights_root)
        runtime = runtime or pick_runtime()
        key = models.ModelKey(name, str(folder), runtime.device, runtime.dtype_name, "clip")
        return models.get(key, lambda: cls._build(name, folder, runtime, is_tiny(name, weights_root)))

    @classmethod
    def _build(cls, name: str, folder: Path, runtime: Runtime, tiny: bool) -> "ClipEmbedder":
        import open_clip
        import torch

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        except Exception as exc:  # safetensors, open_clip and torch raise many types for a damaged file
            raise WeightsCorruptError(
                f"could not load {name} from {folder} ({type(exc).__name__}: {exc}); fetch it again with: "
                f"python -m aas_core weights download {name} --force"
            ) from exc
        model = model.to(runtime.torch_device, dtype=runtime.dtype).eval()
        normalize = preprocess.transforms[-1]
        visual_size = model.visual.image_size
        image_size = visual_size[0] if isinstance(visual_size, (tuple, list)) else int(visual_size)
        with torch.no_grad():
            embed_dim = int(model.encode_text(tokenizer(["a"]).to(runtime.torch_device)).shape[-1])
        return cls(
            name=name,
            model=model,
            tokenizer=tokenizer,
            runtime=runtime,
            image_size=image_size,
            mean=np.asarray(normalize.mean, np.float32).reshape(1, 3, 1, 1),
            std=np.asarray(normalize.std, np.float32).reshape(1, 3, 1, 1),
            embed_dim=embed_dim,
            fingerprint=weights_fingerprint(folder),
            tiny=tiny,
        )

    def _to_tensor(self, images: Sequence[np.ndarray]):
        import torch

        batch = np.stack([center_crop_resize(np.asarray(img)[..., :3], self.image_size) for img in images])
        batch = (batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(batch).to(self.runtime.torch_device, dtype=self.runtime.dtype)

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 unit vectors for HxWx3 uint8 RGB images (any size; centre-cropped)."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                features = self.model.encode_image(self._to_tensor(images[i : i + batch_size]))
                out.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit vectors for texts (truncated to CLIP's 77 tokens)."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.runtime.torch_device)
            features = self.model.encode_text(tokens)
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
