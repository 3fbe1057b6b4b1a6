"""Diffusion models (SD1.5, AnimateDiff motion adapter, depth ControlNet, Wan2.1-VACE) as the Hub stores them.

`REAL_*` hold the hub repos' own configs (the real architectures, used by `bench/generate.py` too); the
tiny writers shrink only the width/depth keys, keep every file name and folder of the hub layout, and
save through diffusers/transformers `save_pretrained`, so `from_pretrained(folder / subfolder)` loads
tiny and real weights with the same code. Tokenizers are real: SD1.5's CLIP BPE comes from the
vocabulary open_clip ships; Wan's T5-style tokenizer is a small Unigram model built here (the real
256k SentencePiece vocabulary is not available offline).
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any, Optional

from aas_core.registry import ModelSpec

CLIP_VOCAB_SIZE = 49408
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"

# --- real configs (hub files, diffusers/transformers version keys left out) ---

REAL_SD15_MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": True,
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
REAL_SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
REAL_SD15_TEXT_ENCODER: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": CLIP_VOCAB_SIZE,
}
REAL_SD15_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
REAL_SD15_VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
REAL_SD15_FEATURE_EXTRACTOR: dict[str, Any] = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
REAL_MOTION_ADAPTER_V153: dict[str, Any] = {
    "_class_name": "MotionAdapter",
    "block_out_channels": [320, 640, 1280, 1280],
    "motion_layers_per_block": 2,
    "motion_max_seq_length": 32,
    "motion_mid_block_layers_per_block": 1,
    "motion_norm_num_groups": 32,
    "motion_num_attention_heads": 8,
    "use_motion_mid_block": False,
}
REAL_CONTROLNET_SD15: dict[str, Any] = {
    "_class_name": "ControlNetModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "class_embed_type": None,
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "projection_class_embeddings_input_dim": None,
    "resnet_time_scale_shift": "default",
    "upcast_attention": False,
    "use_linear_projection": False,
}
REAL_WAN_MODEL_INDEX: dict[str, Any] = {
    "_class_name": "WanVACEPipeline",
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "WanVACETransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
}
REAL_WAN_SCHEDULER: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}
REAL_WAN_VACE_TRANSFORMER_1_3B: dict[str, Any] = {
    "_class_name": "WanVACETransformer3DModel",
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 8960,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "num_attention_heads": 12,
    "num_layers": 30,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
    "vace_in_channels": 96,
    "vace_layers": list(range(0, 30, 2)),
}
REAL_WAN_VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKLWan",
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 16,
}
REAL_UMT5_XXL_ENCODER: dict[str, Any] = {
    "architectures": ["UMT5EncoderModel"],
    "classifier_dropout": 0.0,
    "d_ff": 10240,
    "d_kv": 64,
    "d_model": 4096,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "umt5",
    "num_decoder_layers": 24,
    "num_heads": 64,
    "num_layers": 24,
    "pad_token_id": 0,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "scalable_attention": True,
    "tie_word_embeddings": False,
    "vocab_size": 256384,
}

# --- tiny overrides: same block types, tiny widths; shared keys must agree across the three SD1.5 parts ---

_TINY_BLOCKS = [16, 32]
_TINY_CROSS = 32
TINY_SD15_TEXT_ENCODER = {"hidden_size": _TINY_CROSS, "intermediate_size": 64, "num_attention_heads": 4,
                          "num_hidden_layers": 2, "projection_dim": _TINY_CROSS}
TINY_SD15_UNET = {"attention_head_dim": 2, "block_out_channels": _TINY_BLOCKS, "cross_attention_dim": _TINY_CROSS,
                  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 8, "sample_size": 8}
# Four VAE blocks keep the real 8x spatial factor, so ControlNet's 8x conditioning embedding still lines up.
TINY_SD15_VAE = {"block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 64}
TINY_MOTION_ADAPTER = {"block_out_channels": _TINY_BLOCKS, "motion_norm_num_groups": 8, "motion_num_attention_heads": 2}
TINY_CONTROLNET = {"attention_head_dim": 2, "block_out_channels": _TINY_BLOCKS, "cross_attention_dim": _TINY_CROSS,
                   "conditioning_embedding_out_channels": [8, 8, 16, 16],
                   "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "norm_num_groups": 8}
TINY_WAN_TRANSFORMER = {"attention_head_dim": 12, "ffn_dim": 32, "num_attention_heads": 2, "num_layers": 3,
                        "rope_max_seq_len": 32, "text_dim": 32, "vace_layers": [0, 2]}
TINY_WAN_VAE = {"base_dim": 3, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
TINY_UMT5 = {"d_ff": 37, "d_kv": 8, "d_model": 32, "num_decoder_layers": 2, "num_heads": 4, "num_layers": 2}
TINY_T5_WORDS = 2000
T5_EXTRA_IDS = 300
"""UMT5's sentinel tokens <extra_id_0..299>, as in the real Wan tokenizer (its special_tokens_map.json lists them)."""
"""Whole words taken into the tiny Unigram vocabulary (plus single characters)."""


def config_with(real: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a real config with some keys replaced (the `_class_name` key dropped)."""
    out = copy.deepcopy(real)
    out.pop("_class_name", None)
    out.update(copy.deepcopy(overrides))
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _clip_bpe_merges() -> list[str]:
    import open_clip

    lines = gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8").split("\n")
    # Same slice as CLIP's own tokenizer: 49408 = 2 * 256 byte tokens + 48894 merges + 2 specials.
    return lines[1 : CLIP_VOCAB_SIZE - 256 * 2 - 2 + 1]


def write_clip_tokenizer(folder: Path) -> None:
    """Write SD1.5's CLIP BPE tokenizer files (vocab.json, merges.txt, configs) from open_clip's vocabulary."""
    from open_clip.tokenizer import bytes_to_unicode

    merges = _clip_bpe_merges()
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens] + ["".join(m.split()) for m in merges] + [CLIP_BOS, CLIP_EOS]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    specials = {"bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "pad_token": CLIP_EOS, "unk_token": CLIP_EOS}
    _write_json(folder / "special_tokens_map.json", specials)
    _write_json(
        folder / "tokenizer_config.json",
        {**specials, "add_prefix_space": False, "do_lower_case": True, "errors": "replace",
         "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"},
    )


def write_t5_tokenizer(folder: Path) -> int:
    """Write a small T5-style (Unigram, `▁` word marker, `</s>` appended) fast tokenizer; returns its size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words: list[str] = []
    for merge in _clip_bpe_merges():
        piece = "".join(merge.split())
        if piece.endswith("</w>") and piece[:-4].isalpha() and piece[:-4].isascii():
            words.append(piece[:-4])
        if len(words) == TINY_T5_WORDS:
            break
    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -8.0) for c in chars] + [("\u2581" + c, -9.0) for c in chars]
    vocab += [("\u2581" + w, -3.0 - i * 1e-4) for i, w in enumerate(words)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=T5_EXTRA_IDS,
        model_max_length=512,
    )
    tokenizer.save_pretrained(str(folder))
    # The hub folder also holds the SentencePiece model and the special-tokens map: write them too.
    (folder / "spiece.model").write_bytes(_sentencepiece_model(vocab))
    _write_json(folder / "special_tokens_map.json", {
        "additional_special_tokens": [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)],
        "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
    })
    return len(tokenizer)


def _sentencepiece_model(vocab: list[tuple[str, float]]) -> bytes:
    """A Unigram SentencePiece model (the spiece.model protobuf) of `vocab`: pad, eos, unk first, as T5's."""
    from transformers.utils import sentencepiece_model_pb2_new as spm

    model = spm.ModelProto()
    for index, (piece, score) in enumerate(vocab):
        entry = model.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = {0: 3, 1: 3, 2: 2}.get(index, 1)  # CONTROL (pad, eos), UNKNOWN, NORMAL
    model.trainer_spec.model_type = 1  # UNIGRAM
    model.trainer_spec.unk_id, model.trainer_spec.pad_id, model.trainer_spec.eos_id, model.trainer_spec.bos_id = 2, 0, 1, -1
    model.normalizer_spec.name, model.normalizer_spec.add_dummy_prefix = "nmt_nfkc", True
    return model.SerializeToString()


def _save_model(model: Any, folder: Path, **kwargs: Any) -> None:
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True, **kwargs)


def write_tiny_sd15(folder: Path, spec: Optional[ModelSpec] = None, real: bool = False) -> None:
    """Tiny (or, with `real`, full-size) random Stable Diffusion 1.5 in the hub's diffusers layout (no safety checker)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    _write_json(folder / "model_index.json", REAL_SD15_MODEL_INDEX)
    _write_json(folder / "feature_extractor" / "preprocessor_config.json", REAL_SD15_FEATURE_EXTRACTOR)
    PNDMScheduler.from_config(config_with(REAL_SD15_SCHEDULER, {})).save_pretrained(str(folder / "scheduler"))
    write_clip_tokenizer(folder / "tokenizer")
    torch.manual_seed(0)
    text_config = CLIPTextConfig(**config_with(REAL_SD15_TEXT_ENCODER, {} if real else TINY_SD15_TEXT_ENCODER))
    _save_model(CLIPTextModel(text_config), folder / "text_encoder")
    torch.manual_seed(1)
    _save_model(UNet2DConditionModel.from_config(config_with(REAL_SD15_UNET, {} if real else TINY_SD15_UNET)), folder / "unet")
    torch.manual_seed(2)
    _save_model(AutoencoderKL.from_config(config_with(REAL_SD15_VAE, {} if real else TINY_SD15_VAE)), folder / "vae")


def write_tiny_motion_adapter(folder: Path, spec: Optional[ModelSpec] = None, real: bool = False) -> None:
    """Tiny (or full-size) random AnimateDiff v3 motion adapter matching the SD1.5 UNet of the same size."""
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(3)
    _save_model(MotionAdapter.from_config(config_with(REAL_MOTION_ADAPTER_V153, {} if real else TINY_MOTION_ADAPTER)), folder)


def write_tiny_controlnet(folder: Path, spec: Optional[ModelSpec] = None, real: bool = False) -> None:
    """Tiny (or full-size) random SD1.5 depth ControlNet matching the SD1.5 UNet of the same size."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(4)
    model = ControlNetModel.from_config(config_with(REAL_CONTROLNET_SD15, {} if real else TINY_CONTROLNET))
    if real:
        _save_model(model, folder)
        return
    # A fresh ControlNet has zero-initialised output convolutions (no effect at all); random tiny
    # weights must make the depth input matter, or structure tests could not see it.
    with torch.no_grad():
        for conv in [*model.controlnet_down_blocks, model.controlnet_mid_block]:
            conv.weight.normal_(0.0, 0.3)
            conv.bias.normal_(0.0, 0.1)
        # Default-initialised, the depth embedding is too weak for a moved object to change a tiny shot.
        for conv in model.controlnet_cond_embedding.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0.0, 0.3)
    _save_model(model, folder)


def write_tiny_wan_vace(folder: Path, spec: Optional[ModelSpec] = None, real: bool = False) -> None:
    """Tiny random Wan2.1-VACE pipeline in the hub's diffusers layout (sharded like the real one).

    With `real`: the full-size transformer and VAE, and a one-layer UMT5 at full width standing in for the
    24-layer text encoder (23 GB in float32: it would not fit beside the rest in this machine's RAM).
    """
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    _write_json(folder / "model_index.json", REAL_WAN_MODEL_INDEX)
    UniPCMultistepScheduler.from_config(config_with(REAL_WAN_SCHEDULER, {})).save_pretrained(str(folder / "scheduler"))
    vocab_size = write_t5_tokenizer(folder / "tokenizer")
    torch.manual_seed(5)
    text_overrides = {"num_layers": 1, "num_decoder_layers": 1} if real else TINY_UMT5
    text_config = UMT5Config(**config_with(REAL_UMT5_XXL_ENCODER, {**text_overrides, "vocab_size": vocab_size}))
    shard = "5GB" if real else "200KB"
    _save_model(UMT5EncoderModel(text_config), folder / "text_encoder", max_shard_size=shard)
    # transformers 5 writes UMT5 configs as tie_word_embeddings=true + scale_decoder_outputs=false; the hub's
    # file (written by 4.x) says tie_word_embeddings=false. Keep the hub's form so loading takes the real path.
    config_path = folder / "text_encoder" / "config.json"
    saved = json.loads(config_path.read_text())
    saved.pop("scale_decoder_outputs", None)
    _write_json(config_path, {**saved, "tie_word_embeddings": False})
    torch.manual_seed(6)
    transformer = WanVACETransformer3DModel.from_config(config_with(REAL_WAN_VACE_TRANSFORMER_1_3B, {} if real else TINY_WAN_TRANSFORMER))
    _save_model(transformer, folder / "transformer", max_shard_size=shard)
    torch.manual_seed(7)
    _save_model(AutoencoderKLWan.from_config(config_with(REAL_WAN_VAE, {} if real else TINY_WAN_VAE)), folder / "vae")
