"""TimeInv training: learn a concept's timestep-bucketed token vectors (and optionally a LoRA) from photos.

Standard noise-prediction loss on the SD1.5 image UNet (no motion module); the text encoder, UNet and
VAE stay frozen (the optional LoRA on the cross-attention key/value projections is the only other
trainable part, removed from the shared UNet afterwards). Each step draws its batch, noise and
timesteps from a generator seeded by (seed, step), so a resumed run continues exactly where the
interrupted one stopped.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from aas_core.concepts.ip_adapter import DEFAULT_IP_SCALE, DEFAULT_IP_VARIANT, check_ip_scale, check_variant, encode_photos
from aas_core.concepts.photos import Photo, augmented_views, captions, load_photos, square_crop
from aas_core.concepts.store import Concept, Root, check_free, check_name, holding_concept_lock, training_dir, write_concept
from aas_core.concepts.timeinv import SwapEntry, TokenSwap, expand_prompt, init_table, token_for
from aas_core.device import Runtime, pick_runtime
from aas_core.errors import Cancelled, InputError
from aas_core.fsutil import atomic_write_json, json_digest
from aas_core.limits import MAX_TI_VECTORS
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.registry import BACKEND_BASE_MODEL

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_BASE = BACKEND_BASE_MODEL["animatediff"]
"""TimeInv trains the AnimateDiff backend's image model."""
LORA_ADAPTER = "aas_concept"
LORA_TARGETS = ("attn2.to_k", "attn2.to_v")
"""Cross-attention key/value projections: where the paper's light model tuning goes."""
STATE_FILE = "state.safetensors"
STATE_META = "state.json"


@dataclass
class TrainSettings:
    """Everything that shapes a TimeInv training run (defaults suit a real GPU and SD1.5 at 512 px)."""

    steps: int = 1500
    buckets: int = 8
    """K: timestep buckets, each with its own vectors."""
    vectors: int = 2
    """n: token vectors per bucket."""
    lr: float = 5e-3
    batch_size: int = 4
    resolution: Optional[int] = None
    """Training side in pixels; None = the base model's native size (512 for SD1.5)."""
    lora: bool = False
    lora_rank: int = 4
    lora_lr: float = 1e-4
    gradient_checkpointing: bool = False
    views_per_photo: int = 4
    """Augmented views (flips, zoomed crops) encoded once per photo."""
    flip: bool = True
    scale_jitter: float = 0.1
    validate_every: int = 250
    """Render a validation image every N steps (0 = never)."""
    validation_inference_steps: int = 25
    validation_prompt: str = "a photo of {}"
    checkpoint_every: int = 250
    """Save a resumable checkpoint every N steps (0 = only on cancel)."""
    seed: int = 0

    def check(self) -> None:
        """Raise InputError for settings that cannot work."""
        for key in ("steps", "buckets", "vectors", "batch_size", "views_per_photo", "lora_rank"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"{key.replace('_', '-')} must be at least 1 (got {getattr(self, key)})")
        if int(self.vectors) > MAX_TI_VECTORS:
            raise InputError(f"vectors must be at most {MAX_TI_VECTORS} (got {self.vectors}); 2-4 is typical")
        if self.lr <= 0 or self.lora_lr <= 0:
            raise InputError("learning rates must be positive")
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 8):
            raise InputError(f"resolution must be a multiple of 8 and at least 64 (got {self.resolution})")
        if not 0.0 <= self.scale_jitter < 0.9:
            raise InputError(f"scale-jitter must be in [0, 0.9) (got {self.scale_jitter})")
        if "{}" not in self.validation_prompt:
            raise InputError("validation prompt must contain {} where the concept token goes")


@dataclass
class TrainResult:
    """A finished training: the concept and the loss curve."""

    concept: Concept
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class SDParts:
    """The Stable Diffusion pieces TimeInv trains against (shared, frozen)."""

    base_model: str
    # Any: diffusers/transformers modules whose attributes (config, adapters, checkpointing) mypy cannot follow.
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler_config: dict
    tiny: bool
    hub_id: str

    @property
    def resolution(self) -> int:
        """Native image side: latent size x VAE factor."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * factor

    @property
    def num_train_timesteps(self) -> int:
        """Length of the training noise schedule."""
        return int(self.scheduler_config.get("num_train_timesteps", 1000))


PARTS_VARIANT = "timeinv"
"""Variant of the training parts' key in `aas_core.models`: the same weights as the generation pipeline, another form."""


def load_parts(base_model: str = DEFAULT_BASE, root: Root = None, runtime: Optional[Runtime] = None) -> SDParts:
    """The tokenizer, text encoder, VAE and UNet of a base model, loaded once per (name, folder, device, dtype).

    Kept in `aas_core.models` under the base model's name, so loading them frees a generation pipeline
    built on the same weights (and the pipeline frees them): SD1.5 is never resident twice.
    """
    from aas_core import models
    from aas_core.weights import model_dir

    runtime = runtime or pick_runtime()
    folder = model_dir(base_model, root)
    key = models.ModelKey(base_model, str(folder), runtime.device, runtime.dtype_name, PARTS_VARIANT)
    return models.get(key, lambda: _load_parts(base_model, folder, root, runtime))


def _load_parts(base_model: str, folder: Path, root: Root, runtime: Runtime) -> SDParts:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from aas_core.registry import get_spec
    from aas_core.weights import file_variant, is_tiny

    device = runtime.torch_device
    variant = file_variant(base_model, folder, runtime.dtype_name)  # half-size files on half-precision runs
    # The text encoder stays float32: gradients flow through it into the (float32) table.
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32, variant=variant).to(device).eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=runtime.dtype, variant=variant).to(device).eval()
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=runtime.dtype, variant=variant).to(device).eval()
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
    return SDParts(
        base_model=base_model,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder=text_encoder,
        vae=vae,
        unet=unet,
        scheduler_config=json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
        tiny=is_tiny(base_model, root),
        hub_id=get_spec(base_model).hub_id,
    )


class TimeInvTrainer:
    """One training run in memory: the table (and LoRA), the optimizer, the latent pool, `step()`."""

    def __init__(
        self,
        parts: SDParts,
        name: str,
        class_word: str,
        images: Sequence["Image.Image"],
        settings: TrainSettings,
        runtime: Runtime,
    ) -> None:
        import torch
        from diffusers import DDPMScheduler

        self.parts, self.name, self.settings, self.runtime = parts, name, settings, runtime
        self.class_word = class_word
        self.device = runtime.torch_device
        self.half = runtime.dtype != torch.float32
        self.resolution = settings.resolution or parts.resolution
        self.noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
        self.tokenizer = copy.deepcopy(parts.tokenizer)  # the shared tokenizer never sees our tokens
        start = init_table(parts.text_encoder, parts.tokenizer, class_word, settings.buckets, settings.vectors)
        self.table = torch.nn.Parameter(start.to(self.device))
        self.lora_params: list[torch.nn.Parameter] = []
        self.swap = TokenSwap(
            self.tokenizer, parts.text_encoder, [SwapEntry(token_for(name), self.table, parts.num_train_timesteps)]
        ).install()
        try:
            self._setup(images)
        except BaseException:
            self.close()  # never leave hooks or adapters on the shared modules
            raise

    def _setup(self, images: Sequence["Image.Image"]) -> None:
        """LoRA adapters, checkpointing, optimizer and latent pool (undone by `close` if anything fails)."""
        import torch

        parts, settings = self.parts, self.settings
        if settings.lora:
            from peft import LoraConfig

            config = LoraConfig(
                r=settings.lora_rank, lora_alpha=settings.lora_rank, init_lora_weights="gaussian",
                target_modules=list(LORA_TARGETS),
            )
            parts.unet.add_adapter(config, adapter_name=LORA_ADAPTER)
            for pname, param in parts.unet.named_parameters():
                if "lora_" in pname:
                    param.data = param.data.float()  # train adapters in float32 even on a half-precision UNet
                    param.requires_grad_(True)
                    self.lora_params.append(param)
        if settings.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
            parts.text_encoder.activation_checkpointing_enable()
            parts.text_encoder.train()  # transformers checkpoints only in train mode; SD's CLIP has no dropout
        groups = [{"params": [self.table], "lr": settings.lr}]
        if self.lora_params:
            groups.append({"params": self.lora_params, "lr": settings.lora_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.runtime.dtype == torch.float16)
        self.pool = self._encode_pool(images)
        self.step_index = 0

    def _encode_pool(self, images: Sequence["Image.Image"]) -> "torch.Tensor":
        """VAE latents of every augmented view, computed once (the VAE is frozen)."""
        import numpy as np
        import torch

        rng = random.Random(self.settings.seed)
        views = [
            v
            for img in images
            for v in augmented_views(img, self.resolution, self.settings.views_per_photo, rng, self.settings.flip, self.settings.scale_jitter)
        ]
        vae = self.parts.vae
        latents = []
        with torch.no_grad():
            for start in range(0, len(views), 8):
                chunk = np.stack([np.asarray(v, np.float32) for v in views[start : start + 8]]) / 127.5 - 1.0
                pixels = torch.from_numpy(chunk).permute(0, 3, 1, 2).to(self.device, vae.dtype)
                latents.append(vae.encode(pixels).latent_dist.mean.float() * vae.config.scaling_factor)
        return torch.cat(latents)

    def batch(self, step: int) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", list[str]]:
        """The (latents, noise, timesteps, captions) of one step, a pure function of (seed, step)."""
        import torch

        seed = self.settings.seed * 1_000_003 + step
        gen = torch.Generator().manual_seed(seed)
        size = self.settings.batch_size
        index = torch.randint(len(self.pool), (size,), generator=gen)
        timesteps = torch.randint(0, self.parts.num_train_timesteps, (size,), generator=gen)
        noise = torch.randn((size, *self.pool.shape[1:]), generator=gen)
        tokens = expand_prompt(token_for(self.name), self.swap.token_counts)
        return self.pool[index.to(self.device)], noise.to(self.device), timesteps.to(self.device), captions(tokens, size, random.Random(seed))

    def loss(self, latents: "torch.Tensor", noise: "torch.Tensor", timesteps: "torch.Tensor", texts: Sequence[str]) -> "torch.Tensor":
        """Noise-prediction MSE of the UNet given captions encoded with each sample's bucket vectors."""
        import torch
        import torch.nn.functional as F

        hidden = self.swap.encode(texts, timesteps)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        unet = self.parts.unet
        with torch.autocast(self.device.type, dtype=self.runtime.dtype, enabled=self.half):
            pred = unet(noisy.to(unet.dtype), timesteps, encoder_hidden_states=hidden.to(unet.dtype)).sample
        return F.mse_loss(pred.float(), target.float())

    def step(self, batch: Optional[tuple] = None) -> float:
        """One optimisation step on `batch` (default: this step's own draw); returns its loss."""
        latents, noise, timesteps, texts = batch if batch is not None else self.batch(self.step_index)
        loss = self.loss(latents, noise, timesteps, texts)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step_index += 1
        return float(loss.detach())

    def concept(self) -> Concept:
        """An in-memory Concept holding the current table (for validation images)."""
        table = self.table.detach().float().cpu()
        concept = Concept(
            name=self.name, class_word=self.class_word, buckets=table.shape[0], vectors=table.shape[1], dim=table.shape[2],
            base_model=self.parts.base_model, num_train_timesteps=self.parts.num_train_timesteps,
        )
        concept._table = table
        return concept

    def validation_image(self, path: Path) -> Path:
        """Render the validation prompt with the current vectors (and LoRA) and save it as PNG."""
        import torch
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        from aas_core.concepts.inject import apply_concepts

        p = self.parts
        pipe = StableDiffusionPipeline(
            vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet,
            scheduler=DDIMScheduler.from_config(p.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        self.swap.remove()
        try:
            with apply_concepts(pipe, [self.concept()], "animatediff"), torch.no_grad():
                with torch.autocast(self.device.type, dtype=self.runtime.dtype, enabled=self.half):
                    image = pipe(
                        self.settings.validation_prompt.format(token_for(self.name)),
                        height=self.resolution, width=self.resolution,
                        num_inference_steps=self.settings.validation_inference_steps,
                        generator=torch.Generator().manual_seed(self.settings.seed),
                    ).images[0]
        finally:
            self.swap.install()
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path

    def lora_tensors(self) -> Optional[dict]:
        """The LoRA weights in diffusers' `unet.`-prefixed format (None without LoRA)."""
        if not self.lora_params:
            return None
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.parts.unet, adapter_name=LORA_ADAPTER)
        return {f"unet.{k}": v for k, v in state.items()}

    def state_tensors(self) -> dict:
        """Everything a resume needs, as flat tensors for safetensors."""
        tensors = {"table": self.table.detach()}
        for i, param in enumerate(self.lora_params):
            tensors[f"lora.{i}"] = param.detach()
        for index, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"opt.{index}.{key}"] = value.detach() if hasattr(value, "detach") else value
        return {k: v.float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous() for k, v in tensors.items()}

    def load_state(self, tensors: dict, step: int) -> None:
        """Restore a checkpoint written by `state_tensors`."""
        import torch

        with torch.no_grad():
            self.table.copy_(tensors["table"])
            for i, param in enumerate(self.lora_params):
                param.copy_(tensors[f"lora.{i}"])
        state = self.optimizer.state_dict()
        restored: dict = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, index, name = key.split(".", 2)
                restored.setdefault(int(index), {})[name] = value.to(self.device) if name != "step" else value
        state["state"] = restored
        self.optimizer.load_state_dict(state)
        self.step_index = step

    def close(self) -> None:
        """Undo every change to the shared parts: hooks, LoRA layers, checkpointing."""
        self.swap.remove()
        if LORA_ADAPTER in (getattr(self.parts.unet, "peft_config", None) or {}):
            self.parts.unet.unload_lora()
        self.lora_params = []
        if self.settings.gradient_checkpointing:
            self.parts.unet.disable_gradient_checkpointing()
            self.parts.text_encoder.activation_checkpointing_disable()
            # Enabling checkpointing also hooked the input embeddings (inputs require grad); disabling leaves it.
            self.parts.text_encoder.disable_input_require_grads()
            self.parts.text_encoder.eval()


def _fingerprint(name: str, class_word: str, photos: Sequence[Photo], settings: TrainSettings, base_model: str) -> str:
    """What must match for a checkpoint to be resumed (photo contents, settings, base model)."""
    from aas_core.fsutil import file_digest

    digests = [(file_digest(p.path), p.box) for p in photos]
    return json_digest({"name": name, "class": class_word, "photos": digests, "settings": asdict(settings), "base": base_model})


@holding_concept_lock  # a delete while training is refused: the finished concept must not come back
def train_concept(
    name: str,
    class_word: str,
    photos: Sequence[Photo | str],
    settings: Optional[TrainSettings] = None,
    root: Root = None,
    base_model: str = DEFAULT_BASE,
    overwrite: bool = False,
    runtime: Optional[Runtime] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    method: str = "timeinv",
    ip_scale: float = DEFAULT_IP_SCALE,
    ip_variant: str = DEFAULT_IP_VARIANT,
) -> TrainResult:
    """Learn concept `name` from photos and save it under `weights/concepts/<name>/`.

    An interrupted run (cancel, crash) resumes from its last checkpoint when called again with the same
    photos and settings. Only the concept's own tensors are trained: the base model stays bit-identical.
    `method="both"` also stores the photos' IP-Adapter embeddings, so shots condition on the photos too.
    """
    from safetensors.torch import load_file, save_file

    settings = settings or TrainSettings()
    check_name(name)
    settings.check()
    class_word = class_word.strip()
    if not class_word:
        raise InputError("give a class word (e.g. woman, cat, robot): the vectors start from its meaning")
    if method not in ("timeinv", "both"):
        raise InputError(f"train_concept trains methods timeinv and both, not {method!r} (ip-adapter: make_ip_concept)")
    ip_scale, ip_variant = check_ip_scale(ip_scale, "ip-scale"), check_variant(ip_variant)
    check_free(name, root, overwrite)
    photo_list = [p if isinstance(p, Photo) else Photo(str(p)) for p in photos]
    if not photo_list:
        raise InputError("no photos given; pass 3-20 photos of the character (jpg, png or webp)")
    runtime = runtime or pick_runtime()
    parts = load_parts(base_model, root, runtime)
    resolution = settings.resolution or parts.resolution
    images, notes = load_photos(photo_list, resolution)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    report(on_progress, 0.0, "encoding photos")
    crops = [square_crop(img, resolution) for img in images]
    # Before training: a missing IP-Adapter download should stop the run now, not after 1500 steps.
    ip_embeds = encode_photos(crops, root, runtime) if method == "both" else None
    work = training_dir(name, root)
    fingerprint = _fingerprint(name, class_word, photo_list, settings, base_model)
    trainer = TimeInvTrainer(parts, name, class_word, images, settings, runtime)
    try:
        losses: list[float] = []
        resumed = 0
        meta_path = work / STATE_META
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") == fingerprint:
                trainer.load_state(load_file(str(work / STATE_FILE)), int(meta["step"]))
                losses, resumed = list(meta["losses"]), int(meta["step"])
                report(on_progress, resumed / settings.steps, f"resuming at step {resumed}")
            else:
                shutil.rmtree(work)  # a checkpoint of other photos or settings cannot be continued

        def checkpoint() -> None:
            from aas_core.fsutil import atomic_path

            with atomic_path(work / STATE_FILE, suffix=".safetensors") as tmp:
                save_file(trainer.state_tensors(), str(tmp))
            atomic_write_json(meta_path, {"fingerprint": fingerprint, "step": trainer.step_index, "losses": losses})

        while trainer.step_index < settings.steps:
            if cancel is not None and cancel.cancelled:
                checkpoint()
                raise Cancelled(f"training of {name} stopped at step {trainer.step_index}; run it again to resume")
            losses.append(trainer.step())
            done = trainer.step_index
            report(on_progress, done / settings.steps, f"step {done}/{settings.steps} loss {losses[-1]:.4f}")
            if settings.validate_every and done % settings.validate_every == 0:
                trainer.validation_image(work / "validation" / f"step_{done:06d}.png")
            if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
                checkpoint()
        validation = sorted((work / "validation").glob("step_*.png")) if (work / "validation").is_dir() else []
        concept = trainer.concept()
        concept.base_hub_id, concept.tiny, concept.source = parts.hub_id, parts.tiny, "trained"
        concept.method, concept.ip_scale, concept.ip_variant = method, ip_scale, ip_variant  # type: ignore[assignment]
        concept.settings = {
            **asdict(settings), "resolution": resolution, "device": runtime.device, "dtype": runtime.dtype_name,
            "photos": [{"file": Path(p.path).name, "box": p.box} for p in photo_list], "final_loss": losses[-1] if losses else None,
        }
        concept = write_concept(
            concept, trainer.table, root, overwrite=overwrite, photos=crops, lora_tensors=trainer.lora_tensors(),
            validation=validation, ip_embeds=ip_embeds,
        )
        shutil.rmtree(work, ignore_errors=True)
        report(on_progress, 1.0, f"saved {concept.folder}")
        return TrainResult(concept=concept, losses=losses, resumed_from=resumed, warnings=notes)
    finally:
        trainer.close()
