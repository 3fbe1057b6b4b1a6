"""Every model the product uses, in one table: name -> hub id, files, license, size, loader.

Like open_clip's pretrained table: engines ask for a model by name, `aas_core.weights` fetches it
into the weights folder, and `tiny_writer` writes a random-weight stand-in in the same layout for
tests, CI and the `--tiny` preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ModelKind = Literal["clip", "depth", "diffusion", "metric"]


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model and how the product uses it."""

    name: str
    kind: ModelKind
    hub_id: str
    files: tuple[str, ...]
    """Glob patterns fetched from the hub repo; each must match a file for the model to count as present."""
    license: str
    size_mb: int
    loader: str
    """What loads it (a human-readable note shown by `weights list`)."""
    tiny_writer: str
    """`module:function` that writes a tiny random-weight copy in the real layout: fn(dir: Path) -> None."""
    revision: str = "main"
    description: str = ""
    options: dict = field(default_factory=dict)
    """Loader-specific facts (e.g. open_clip architecture name)."""


_OPEN_CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="clip-vit-b-32",
            kind="clip",
            hub_id="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            files=_OPEN_CLIP_FILES,
            license="MIT",
            size_mb=605,
            loader="open_clip local-dir (ViT-B-32, laion2b_s34b_b79k)",
            tiny_writer="aas_core.tiny.clip:write_tiny_open_clip",
            description="Default clip-library embedder: fast, 512-d.",
            options={"arch": "ViT-B-32", "pretrained_tag": "laion2b_s34b_b79k", "embed_dim": 512},
        ),
        ModelSpec(
            name="clip-vit-l-14",
            kind="clip",
            hub_id="laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
            files=_OPEN_CLIP_FILES,
            license="MIT",
            size_mb=1710,
            loader="open_clip local-dir (ViT-L-14, datacomp_xl_s13b_b90k)",
            tiny_writer="aas_core.tiny.clip:write_tiny_open_clip",
            description="Stronger clip-library embedder (79.2% ImageNet zero-shot), 768-d, ~8x slower.",
            options={"arch": "ViT-L-14", "pretrained_tag": "datacomp_xl_s13b_b90k", "embed_dim": 768},
        ),
        # --- depth estimators (motion structure) ---
        # --- generation backends (structure-guided text-to-video) ---
        # --- metrics ---
    ]
}

DEFAULT_CLIP = "clip-vit-b-32"


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name; unknown names list the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None


def names_of_kind(kind: ModelKind) -> tuple[str, ...]:
    """Names of every registry model of one kind, in table order."""
    return tuple(name for name, spec in REGISTRY.items() if spec.kind == kind)
