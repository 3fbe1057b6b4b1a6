"""Tiny open_clip models saved as the Hub's open_clip repos are (config JSON + safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

from aas_core.registry import ModelSpec

TINY_WIDTH = 64


def tiny_open_clip_config(embed_dim: int) -> dict:
    """An open_clip `open_clip_config.json` for a 2-layer ViT/text tower with the real tokenizer."""
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": TINY_WIDTH, "patch_size": 32, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": TINY_WIDTH, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def write_tiny_open_clip(folder: Path, spec: ModelSpec) -> None:
    """Write a random tiny CLIP with the real embedding width into `folder`."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    config = tiny_open_clip_config(int(spec.options["embed_dim"]))
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    model = open_clip.CLIP(**config["model_cfg"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
