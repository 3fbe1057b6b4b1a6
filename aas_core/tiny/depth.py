"""Random-weight depth estimators written in the exact file layout the real hub repos use.

Depth-Anything-V2 is config-driven, so its stand-in is genuinely tiny. The controlnet_aux
annotators (MiDaS, ZoeDepth, LeReS) hard-code their architectures and read fixed file names, so
their stand-ins are full-size networks with random weights (stored in float16 to halve the disk).
"""

from __future__ import annotations

import json
from pathlib import Path

from aas_core.depth.estimators import quiet_imports
from aas_core.registry import ModelSpec

# The real Depth-Anything-V2-Small-hf preprocessor_config.json (hub), so tiny and real preprocess alike.
DEPTH_ANYTHING_PREPROCESSOR = {
    "do_normalize": True,
    "do_pad": False,
    "do_rescale": True,
    "do_resize": True,
    "ensure_multiple_of": 14,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "DPTImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "keep_aspect_ratio": True,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 518, "width": 518},
    "size_divisor": None,
}


def tiny_depth_anything_config() -> dict:
    """A DepthAnythingForDepthEstimation config shaped like V2-Small (4 taps, patch 14) but ~0.2M params."""
    return {
        "architectures": ["DepthAnythingForDepthEstimation"],
        "model_type": "depth_anything",
        "backbone_config": {
            "model_type": "dinov2",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 4,
            "image_size": 518,
            "patch_size": 14,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
            "out_indices": [1, 2, 3, 4],
            "reshape_hidden_states": False,
        },
        "depth_estimation_type": "relative",
        "fusion_hidden_size": 16,
        "head_hidden_size": 8,
        "head_in_index": -1,
        "neck_hidden_sizes": [8, 16, 32, 32],
        "patch_size": 14,
        "reassemble_factors": [4, 2, 1, 0.5],
        "reassemble_hidden_size": 32,
    }


TINY_INPUT_SIDE = 140
"""The tiny stand-in works at 140 px instead of 518 (a config value, like its widths) to keep tests fast."""


def write_tiny_depth_anything(folder: Path, spec: ModelSpec) -> None:
    """config.json + model.safetensors + preprocessor_config.json, as in depth-anything/*-hf."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig(**tiny_depth_anything_config())).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    processor = {**DEPTH_ANYTHING_PREPROCESSOR, "size": {"height": TINY_INPUT_SIDE, "width": TINY_INPUT_SIDE}}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))


def _save_half(state: dict, path: Path, wrap: str | None = None) -> None:
    import torch

    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    torch.save({wrap: half} if wrap else half, str(path))


def write_tiny_midas(folder: Path, spec: ModelSpec) -> None:
    """`dpt_hybrid-midas-501f0c75.pt`: a random DPT-Hybrid state dict (what MidasDetector loads)."""
    import torch

    torch.manual_seed(0)
    with quiet_imports():  # also timm's "deprecated model name" notice for the hybrid backbone
        from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

        model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    _save_half(model.state_dict(), folder / spec.options["filename"])


def write_tiny_zoe(folder: Path, spec: ModelSpec) -> None:
    """`ZoeD_M12_N.pt` holding {"model": state_dict} of a random ZoeDepth-N, with the real file's extra keys.

    The published checkpoint was saved with an older timm, so every BEiT attention block also stores its
    `relative_position_index` buffer; newer timm computes it instead. The stand-in carries the same keys so
    tests take the real file's load path (the loader must drop them).
    """
    import torch

    with quiet_imports():
        from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
        from controlnet_aux.zoe.zoedepth.utils.config import get_config
        from timm.models.beit import gen_relative_position_index

    torch.manual_seed(0)
    model = ZoeDepth.build_from_config(get_config("zoedepth", "infer"))
    state = model.state_dict()
    for key in [k for k in state if k.endswith(".attn.relative_position_bias_table")]:
        attn = model.get_submodule(key.rsplit(".", 1)[0])
        state[key.replace("relative_position_bias_table", "relative_position_index")] = gen_relative_position_index(attn.window_size)
    _save_half(state, folder / spec.options["filename"], wrap="model")


def write_tiny_leres(folder: Path, spec: ModelSpec) -> None:
    """`res101.pth` holding {"depth_model": state_dict} of a random LeReS ResNeXt-101 depth network."""
    import torch

    with quiet_imports():
        from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel

    torch.manual_seed(0)
    _save_half(RelDepthModel(backbone="resnext101").state_dict(), folder / spec.options["filename"], wrap="depth_model")
