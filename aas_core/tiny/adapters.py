"""IP-Adapter (h94/IP-Adapter) and AnimateDiff-Lightning as the Hub stores them, with tiny random weights.

IP-Adapter files are flat safetensors in the original IP-Adapter repo's key layout (`image_proj.*`,
`ip_adapter.{1,3,5,...}.to_{k,v}_ip.weight`), numbered over the SD1.5 UNet's cross-attention layers in
the order diffusers visits them, which is how `load_ip_adapter` reads them back. The image encoder is a
transformers `CLIPVisionModelWithProjection` folder (`config.json` + `model.safetensors`). Lightning's
checkpoints are bare MotionAdapter state dicts (no config.json on the Hub): `lightning_config` says which
architecture to build before loading one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from aas_core.registry import ModelSpec, get_spec
from aas_core.tiny.diffusion import REAL_SD15_UNET, TINY_MOTION_ADAPTER, TINY_SD15_UNET, config_with

IP_ADAPTER_FILES: dict[str, str] = get_spec("ip-adapter-sd15").options["variants"]
"""IP-Adapter variant -> file in h94/IP-Adapter (plain: 4 tokens from the pooled embedding; plus: 16 from patch features)."""
IMAGE_ENCODER_DIR: str = get_spec("ip-adapter-sd15").options["image_encoder"]
LIGHTNING_FILE: str = get_spec("animatediff-lightning").options["file"]
LIGHTNING_STEPS: tuple[int, ...] = get_spec("animatediff-lightning").options["steps"]
"""The step counts ByteDance distilled a checkpoint for."""

REAL_IMAGE_ENCODER: dict[str, Any] = {
    # h94/IP-Adapter models/image_encoder/config.json: OpenCLIP ViT-H/14 vision tower.
    "architectures": ["CLIPVisionModelWithProjection"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "projection_dim": 1024,
}
TINY_IMAGE_ENCODER = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                      "projection_dim": 24}
REAL_PLUS_RESAMPLER = {"hidden_dims": 768, "num_queries": 16, "depth": 4, "dim_head": 64, "ffn_ratio": 4}
"""IP-Adapter Plus (and Plus Face) for SD1.5: a 4-layer perceiver resampler, 12 heads of 64, 16 image tokens."""
TINY_PLUS_RESAMPLER = {"hidden_dims": 64}
"""diffusers reads the head count as to_q rows // 64, so one head of 64 is the smallest that loads."""
PLAIN_TOKENS = 4

REAL_LIGHTNING_ADAPTER: dict[str, Any] = {
    # diffusers' MotionAdapter() defaults: the AnimateDiff v2 motion module (with a mid block) Lightning distils.
    "block_out_channels": [320, 640, 1280, 1280],
    "motion_layers_per_block": 2,
    "motion_mid_block_layers_per_block": 1,
    "motion_max_seq_length": 32,
    "motion_norm_num_groups": 32,
    "motion_num_attention_heads": 8,
    "use_motion_mid_block": True,
}


def lightning_config(tiny: bool) -> dict[str, Any]:
    """The MotionAdapter config a Lightning checkpoint needs (its Hub repo ships none)."""
    return config_with(REAL_LIGHTNING_ADAPTER, TINY_MOTION_ADAPTER if tiny else {})


def cross_attention_layers(unet_config: dict[str, Any]) -> list[tuple[str, int]]:
    """(processor name, hidden size) of every cross-attention layer, in the order diffusers numbers IP-Adapter keys."""
    from diffusers import UNet2DConditionModel

    # Built on the meta device: only the module tree is needed, not weights.
    with _meta_device():
        unet = UNet2DConditionModel.from_config(unet_config)
    channels = list(unet.config.block_out_channels)
    layers = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        layers.append((name, hidden))
    return layers


def _meta_device():
    import torch

    return torch.device("meta")


def ip_adapter_tensors(variant: str, unet_config: dict[str, Any], encoder_hidden: int, encoder_projection: int,
                       resampler: Optional[dict[str, Any]] = None, seed: int = 0) -> dict[str, Any]:
    """Random IP-Adapter weights of one variant for a UNet config, keyed as in h94/IP-Adapter's safetensors."""
    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    gen = torch.Generator().manual_seed(seed)
    cross = int(unet_config["cross_attention_dim"])

    # Strong enough that the photos visibly steer a tiny random UNet (tests check that they do, and then don't).
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.5

    tensors: dict[str, torch.Tensor] = {}
    for i, (_, hidden) in enumerate(cross_attention_layers(unet_config)):
        key = 2 * i + 1
        tensors[f"ip_adapter.{key}.to_k_ip.weight"] = rand(hidden, cross)
        tensors[f"ip_adapter.{key}.to_v_ip.weight"] = rand(hidden, cross)
    if variant == "plain":
        tensors["image_proj.proj.weight"] = rand(PLAIN_TOKENS * cross, encoder_projection)
        tensors["image_proj.proj.bias"] = rand(PLAIN_TOKENS * cross)
        tensors["image_proj.norm.weight"] = torch.ones(cross)
        tensors["image_proj.norm.bias"] = torch.zeros(cross)
        return tensors
    settings = {**REAL_PLUS_RESAMPLER, **(resampler or {})}
    torch.manual_seed(seed)
    model = IPAdapterPlusImageProjection(
        embed_dims=encoder_hidden, output_dims=cross, hidden_dims=settings["hidden_dims"], depth=settings["depth"],
        dim_head=settings["dim_head"], heads=settings["hidden_dims"] // settings["dim_head"],
        num_queries=settings["num_queries"], ffn_ratio=settings["ffn_ratio"],
    )
    for name, value in _resampler_to_original(model.state_dict()).items():
        tensors[f"image_proj.{name}"] = value
    return tensors


def _resampler_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """diffusers' IPAdapterPlusImageProjection keys -> the IP-Adapter repo's Resampler keys (what the Hub file holds)."""
    import torch

    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "layers":
            out[key] = value
            continue
        i, rest = parts[1], ".".join(parts[2:])
        if rest in ("attn.to_k.weight", "attn.to_v.weight"):
            if rest.endswith("to_k.weight"):
                out[f"layers.{i}.0.to_kv.weight"] = torch.cat([value, state[f"layers.{i}.attn.to_v.weight"]])
            continue
        renamed = {
            "ln0.weight": "0.norm1.weight", "ln0.bias": "0.norm1.bias", "ln1.weight": "0.norm2.weight",
            "ln1.bias": "0.norm2.bias", "attn.to_q.weight": "0.to_q.weight", "attn.to_out.0.weight": "0.to_out.weight",
            "ff.0.weight": "1.0.weight", "ff.0.bias": "1.0.bias", "ff.1.net.0.proj.weight": "1.1.weight",
            "ff.1.net.2.weight": "1.3.weight",
        }[rest]
        out[f"layers.{i}.{renamed}"] = value
    return out


def write_tiny_ip_adapter(folder: Path, spec: Optional[ModelSpec] = None, real: bool = False) -> None:
    """Tiny (or full-size) random h94/IP-Adapter SD1.5 files: the three adapters and the ViT-H image encoder."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder_config = config_with(REAL_IMAGE_ENCODER, {} if real else TINY_IMAGE_ENCODER)
    encoder_config.pop("architectures")
    torch.manual_seed(8)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**encoder_config)).eval()
    encoder.save_pretrained(str(folder / IMAGE_ENCODER_DIR), safe_serialization=True)
    unet_config = config_with(REAL_SD15_UNET, {} if real else TINY_SD15_UNET)
    for seed, (variant, rel) in enumerate(IP_ADAPTER_FILES.items()):
        tensors = ip_adapter_tensors(
            variant, unet_config, encoder_config["hidden_size"], encoder_config["projection_dim"],
            None if real else TINY_PLUS_RESAMPLER, seed=10 + seed,
        )
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / rel))


def write_tiny_lightning(folder: Path, spec: Optional[ModelSpec] = None, real: bool = False) -> None:
    """Tiny (or full-size) random AnimateDiff-Lightning checkpoints: one bare MotionAdapter state dict per step count."""
    import torch
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for steps in LIGHTNING_STEPS:
        torch.manual_seed(20 + steps)
        adapter = MotionAdapter.from_config(lightning_config(tiny=not real))
        state = {k: v.contiguous() for k, v in adapter.state_dict().items()}
        save_file(state, str(folder / LIGHTNING_FILE.format(steps=steps)))
