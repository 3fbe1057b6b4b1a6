"""Every model the product uses, in one table: name -> hub id, files, license, size, loader.

Like open_clip's pretrained table: engines ask for a model by name, `aas_core.weights` fetches it
into the weights folder, and `tiny_writer` writes a random-weight stand-in in the same layout for
tests, CI and the `--tiny` preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ModelKind = Literal["clip", "depth", "diffusion", "metric", "llm"]


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
    """`module:function` writing a tiny random-weight copy in the real layout: fn(folder: Path, spec: ModelSpec) -> None."""
    revision: str = "main"
    """Hub commit the files are fetched at: a 40-hex commit id, or "main" where none was found (UNPINNED)."""
    description: str = ""
    options: dict = field(default_factory=dict)
    """Loader-specific facts (e.g. open_clip architecture name)."""
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Alternative file sets of the same weights, e.g. "fp16": half-size files for half-precision GPUs."""
    converted: dict[str, str] = field(default_factory=dict)
    """Hub pickle file -> safetensors file written from it once at download (torch.load(weights_only=True)),
    for repos that ship no safetensors: at run time only the safetensors file is ever read."""

    def files_for(self, variant: str | None = None) -> tuple[str, ...]:
        """The hub file patterns of `variant` (the full-precision set for None or a variant the repo lacks)."""
        return self.variants.get(variant or "", self.files)

    def local_files(self, variant: str | None = None) -> tuple[str, ...]:
        """The file patterns a complete local copy holds (converted files under their safetensors names)."""
        return tuple(self.converted.get(f, f) for f in self.files_for(variant))


_OPEN_CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")
_SD15_FILES = (
    "model_index.json",
    "feature_extractor/preprocessor_config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
_DIFFUSERS_MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
_DIFFUSERS_MODEL_FP16 = ("config.json", "diffusion_pytorch_model.fp16.safetensors")
_ANNOTATORS_REVISION = "5bc80eec2b4fddbb743c1e9329e3bd94b2cae14d"
"""lllyasviel/Annotators after "Upload 2 files" (res101.pth + latest_net_G.pth, May 2023): every file we fetch."""

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="clip-vit-b-32",
            kind="clip",
            hub_id="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            revision="1a25a446712ba5ee05982a381eed697ef9b435cf",
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
            revision="11681a0c38f47b1809e6746e671ca4d5ab0184af",
            # This repo ships its open_clip weights only as a pickle (its model.safetensors is the transformers
            # CLIPModel layout): fetched once, converted to open_clip_model.safetensors, the pickle removed.
            files=("open_clip_config.json", "open_clip_pytorch_model.bin"),
            converted={"open_clip_pytorch_model.bin": "open_clip_model.safetensors"},
            license="MIT",
            size_mb=1710,
            loader="open_clip local-dir (ViT-L-14, datacomp_xl_s13b_b90k)",
            tiny_writer="aas_core.tiny.clip:write_tiny_open_clip",
            description="Stronger clip-library embedder (79.2% ImageNet zero-shot), 768-d, ~8x slower.",
            options={"arch": "ViT-L-14", "pretrained_tag": "datacomp_xl_s13b_b90k", "embed_dim": 768},
        ),
        # --- depth estimators (motion structure) ---
        ModelSpec(
            name="depth-anything-v2-small",
            kind="depth",
            hub_id="depth-anything/Depth-Anything-V2-Small-hf",
            revision="5426e4f0f36572d16453bbda7a8389317b1bef99",
            files=("config.json", "model.safetensors", "preprocessor_config.json"),
            license="Apache-2.0",
            size_mb=99,
            loader="transformers DepthAnythingForDepthEstimation (local dir)",
            tiny_writer="aas_core.tiny.depth:write_tiny_depth_anything",
            description="Default depth estimator: relative depth, 25M params, sharp and temporally steady.",
        ),
        ModelSpec(
            name="midas-dpt-hybrid",
            kind="depth",
            hub_id="lllyasviel/Annotators",
            revision=_ANNOTATORS_REVISION,
            files=("dpt_hybrid-midas-501f0c75.pt",),
            license="MIT (MiDaS weights and code)",
            size_mb=493,
            loader="controlnet_aux MidasDetector (dpt_hybrid, local dir)",
            tiny_writer="aas_core.tiny.depth:write_tiny_midas",
            description="MiDaS DPT-Hybrid, the paper's depth estimator (ControlNet's depth annotator).",
            options={"filename": "dpt_hybrid-midas-501f0c75.pt"},
        ),
        ModelSpec(
            name="zoedepth",
            kind="depth",
            hub_id="lllyasviel/Annotators",
            revision=_ANNOTATORS_REVISION,
            files=("ZoeD_M12_N.pt",),
            license="MIT (ZoeDepth weights and code)",
            size_mb=1443,
            loader="controlnet_aux ZoeDetector (zoedepth N, local dir)",
            tiny_writer="aas_core.tiny.depth:write_tiny_zoe",
            description="ZoeDepth-N metric depth (BEiT-L, 345M params): slow, ~27 s per 256px frame on 2 CPU cores.",
            options={"filename": "ZoeD_M12_N.pt"},
        ),
        ModelSpec(
            name="leres",
            kind="depth",
            hub_id="lllyasviel/Annotators",
            revision=_ANNOTATORS_REVISION,
            # Only the depth network: controlnet_aux's pix2pix merge net (latest_net_G.pth, 318 MB; 849 MB with
            # both) serves its "boost" mode, which we never run, and it would always be placed on GPU 0.
            files=("res101.pth",),
            license="Adobe Research License: non-commercial only",
            size_mb=531,
            loader="controlnet_aux RelDepthModel (ResNeXt-101), res101.pth loaded with weights_only",
            tiny_writer="aas_core.tiny.depth:write_tiny_leres",
            description="LeReS relative depth (ResNeXt-101). Not for commercial use: check its licence first.",
            options={"filename": "res101.pth"},
        ),
        # --- generation backends (structure-guided text-to-video) ---
        ModelSpec(
            name="sd15",
            kind="diffusion",
            hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            revision="f03de327dd89b501a01da37fc5240cf4fdba85a1",
            # Diffusers folders only: no .ckpt, no non-EMA/.bin duplicates, no safety checker; fp32 or the fp16 variant.
            files=_SD15_FILES,
            variants={"fp16": tuple(f.replace(".safetensors", ".fp16.safetensors") for f in _SD15_FILES)},
            license="CreativeML OpenRAIL-M",
            size_mb=4270,
            loader="diffusers/transformers from_pretrained(model_dir / subfolder)",
            tiny_writer="aas_core.tiny.diffusion:write_tiny_sd15",
            description="Stable Diffusion 1.5 base: AnimateDiff's image model; its CLIP text encoder is what concepts train.",
        ),
        ModelSpec(
            name="animatediff-motion-adapter-v1-5-3",
            kind="diffusion",
            hub_id="guoyww/animatediff-motion-adapter-v1-5-3",
            revision="449d8993ead63a068e1030eb26925132814db1c8",
            files=_DIFFUSERS_MODEL_FILES,
            variants={"fp16": _DIFFUSERS_MODEL_FP16},
            license="Apache-2.0",
            size_mb=1670,
            loader="diffusers MotionAdapter.from_pretrained",
            tiny_writer="aas_core.tiny.diffusion:write_tiny_motion_adapter",
            description="AnimateDiff v3 motion module for SD1.5 (16-frame window).",
        ),
        ModelSpec(
            name="controlnet-depth-sd15",
            kind="diffusion",
            hub_id="lllyasviel/control_v11f1p_sd15_depth",
            revision="7c693a1fe066e89184a9e04489e0d3a3519a1aa3",
            files=_DIFFUSERS_MODEL_FILES,
            variants={"fp16": _DIFFUSERS_MODEL_FP16},
            license="OpenRAIL",
            size_mb=1450,
            loader="diffusers ControlNetModel.from_pretrained",
            tiny_writer="aas_core.tiny.diffusion:write_tiny_controlnet",
            description="ControlNet 1.1 depth for SD1.5: the per-frame structure guide of the AnimateDiff backend.",
        ),
        ModelSpec(
            name="wan2.1-vace-1.3b",
            kind="diffusion",
            hub_id="Wan-AI/Wan2.1-VACE-1.3B-diffusers",
            revision="ec4d2cb062b548996b179d493fdd05340de702a1",
            # The whole tokenizer folder as the hub has it: tokenizer.json is what loads, spiece.model and
            # special_tokens_map.json keep the slow tokenizer and the 300 <extra_id_N> specials intact.
            files=(
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/*.json",
                "text_encoder/*.safetensors",
                "tokenizer/tokenizer.json",
                "tokenizer/tokenizer_config.json",
                "tokenizer/special_tokens_map.json",
                "tokenizer/spiece.model",
                "transformer/*.json",
                "transformer/*.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ),
            license="Apache-2.0",
            size_mb=19100,
            loader="diffusers WanVACEPipeline.from_pretrained",
            tiny_writer="aas_core.tiny.diffusion:write_tiny_wan_vace",
            description="Wan2.1-VACE 1.3B: depth-video control plus character reference images (4k+1 frames).",
        ),
        # --- story planner (language model) ---
        ModelSpec(
            name="qwen2.5-1.5b-instruct",
            kind="llm",
            hub_id="Qwen/Qwen2.5-1.5B-Instruct",
            files=(
                "config.json",
                "generation_config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
                "vocab.json",
                "merges.txt",
                "LICENSE",
            ),
            license="Apache-2.0",
            size_mb=3090,
            revision="f73cfd58be7c44c3caabea717217251688cd47b1",
            loader="transformers AutoModelForCausalLM + AutoTokenizer (local dir), JSON-schema constrained decoding",
            tiny_writer="aas_core.tiny.llm:write_tiny_qwen_instruct",
            description="Story planner: writes each shot's retrieval query, prompt, caption, duration and transition.",
        ),
        # --- instant characters and fast shots (AnimateDiff backend) ---
        ModelSpec(
            name="ip-adapter-sd15",
            kind="diffusion",
            hub_id="h94/IP-Adapter",
            revision="018e402774aeeddd60609b4ecdb7e298259dc729",
            # safetensors only: the repo's .bin/.pth duplicates are pickles and are never fetched.
            files=(
                "models/ip-adapter_sd15.safetensors",
                "models/ip-adapter-plus_sd15.safetensors",
                "models/ip-adapter-plus-face_sd15.safetensors",
                "models/image_encoder/config.json",
                "models/image_encoder/model.safetensors",
            ),
            license="Apache-2.0",
            size_mb=2770,
            loader="diffusers load_ip_adapter (state dict) + transformers CLIPVisionModelWithProjection (ViT-H/14)",
            tiny_writer="aas_core.tiny.adapters:write_tiny_ip_adapter",
            description="IP-Adapter for SD1.5: instant characters from photos, no training (plain, plus, plus-face).",
            options={
                "variants": {
                    "plain": "models/ip-adapter_sd15.safetensors",
                    "plus": "models/ip-adapter-plus_sd15.safetensors",
                    "plus-face": "models/ip-adapter-plus-face_sd15.safetensors",
                },
                "image_encoder": "models/image_encoder",
            },
        ),
        ModelSpec(
            name="animatediff-lightning",
            kind="diffusion",
            hub_id="ByteDance/AnimateDiff-Lightning",
            files=tuple(f"animatediff_lightning_{n}step_diffusers.safetensors" for n in (1, 2, 4, 8)),
            license="CreativeML OpenRAIL-M",
            size_mb=3632,
            loader="diffusers MotionAdapter (v2 architecture, built from config) + load_state_dict of one step file",
            tiny_writer="aas_core.tiny.adapters:write_tiny_lightning",
            description="AnimateDiff-Lightning: motion module distilled for 1/2/4/8 steps, Euler trailing, no CFG.",
            options={"file": "animatediff_lightning_{steps}step_diffusers.safetensors", "steps": (1, 2, 4, 8)},
        ),
        # --- metrics ---
    ]
}

DEFAULT_CLIP = "clip-vit-b-32"

UNPINNED: frozenset[str] = frozenset({"animatediff-lightning"})
"""Models fetched at "main": no full commit id of their hub repo was found in the published listings checked.
Every other entry is pinned to a full commit id seen in published hub pages, resolve URLs or cache snapshot
paths, with the file names checked against the hub's file list."""

BACKEND_MODELS: dict[str, tuple[str, ...]] = {
    "animatediff": ("sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15"),
    "vace": ("wan2.1-vace-1.3b",),
}
"""Registry names each generation backend loads."""
BACKEND_BASE_MODEL: dict[str, str] = {"animatediff": "sd15", "vace": "wan2.1-vace-1.3b"}
"""The base model of each backend: what concepts are trained on and what its pipeline is keyed by."""


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
