"""`generate`: one shot from a prompt and a depth sequence, with progress, cancel, OOM retry and its output folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from aas_core import __version__, models
from aas_core.depth.video import DepthVideo
from aas_core.device import Runtime, pick_runtime
from aas_core.errors import InputError
from aas_core.fsutil import atomic_dir, atomic_write_json, check_writable, json_digest
from aas_core.generate import pipelines, presets
from aas_core.generate.spec import OutOfMemory, ShotResult, ShotSpec
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.sampling import nearest_indices
from aas_core.video_io import write_video

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_OUT_DIR = Path("outputs") / "shots"
VIDEO_FILE = "shot.mp4"
PARAMS_FILE = "params.json"
FRAMES_DIR = "frames"
LOAD_SHARE, STEPS_SHARE = 0.05, 0.85
"""Progress fractions: loading, then the denoising steps, then decode and writing."""


def control_frames(depth: DepthVideo, frames: int, size: tuple[int, int]) -> tuple[list["Image.Image"], list[int]]:
    """Depth resampled to `frames` frames and cover-cropped to `size` (w, h), as RGB images (near = bright)."""
    from PIL import Image, ImageOps

    indices = nearest_indices(depth.num_frames, frames).tolist()
    gray = depth.as_uint8()
    images = [
        ImageOps.fit(Image.fromarray(gray[i]), size, method=Image.Resampling.BICUBIC).convert("RGB")
        for i in indices
    ]
    return images, indices


def depth_digest(depth: DepthVideo) -> str:
    """SHA-256 of the depth frames: two shots share it only if they follow the same structure."""
    return hashlib.sha256(np.ascontiguousarray(depth.frames).tobytes()).hexdigest()


def _load_references(spec: ShotSpec, concepts: Sequence[Any]) -> list["Image.Image"]:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in spec.reference_images:
        try:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"reference image {path} cannot be read ({exc}); use a PNG or JPEG") from exc
    if spec.backend == "vace":
        # VACE takes a character as reference images; AnimateDiff gets concepts as learned tokens instead.
        for concept in concepts:
            images.extend(img.convert("RGB") for img in concept.reference_images())
    return images


@contextlib.contextmanager
def _concepts_applied(pipe: Any, concepts: Sequence[Any], spec: ShotSpec, weights_root: Any) -> Iterator[Any]:
    """The concepts (TimeInv vectors, IP-Adapter photos) in `pipe` for one call; yields their AppliedConcepts or None."""
    if not concepts:
        yield None
        return
    from aas_core.concepts import apply_concepts  # only needed (and importable) when concepts are used

    with apply_concepts(pipe, concepts, spec.backend, weights_root=weights_root, ip_scale=spec.ip_scale) as applied:
        yield applied


class _Timer:
    """Hooks on the real modules that time the step loop and the VAE decode without touching the pipeline."""

    def __init__(self, step_modules: Sequence[Any], vae: Any) -> None:
        self.first_step: Optional[float] = None
        self.step_ends: list[float] = []
        self.seconds = {"encode_s": 0.0, "decode_s": 0.0}
        self._started = 0.0
        # The loop starts with whichever step module runs first (AnimateDiff calls its ControlNet before the UNet).
        self._handles = [module.register_forward_pre_hook(self._denoiser_pre) for module in step_modules]
        # VACE VAE-encodes its control video before the loop: model work, timed apart from pipeline overhead.
        for part, key in ((vae.encoder, "encode_s"), (vae.decoder, "decode_s")):
            self._handles.append(part.register_forward_pre_hook(self._start))
            self._handles.append(part.register_forward_hook(lambda m, a, o, key=key: self._stop(key)))

    def _denoiser_pre(self, module: Any, args: Any) -> None:
        if self.first_step is None:
            self.first_step = time.perf_counter()

    def _start(self, module: Any, args: Any) -> None:
        self._started = time.perf_counter()

    def _stop(self, key: str) -> None:
        self.seconds[key] += time.perf_counter() - self._started

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _structure_active(step: int, steps: int, start: float, end: float) -> bool:
    # Same rule as diffusers' control_guidance_start/end, so both backends read the schedule alike.
    return not (step / steps < start or (step + 1) / steps > end)


def _diffusers_minor() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version("diffusers").split(".")[:2] if part.isdigit())


_PRIVATE_FREE_NOISE = _diffusers_minor() == (0, 42)
"""The private FreeNoise helpers below were checked against diffusers 0.42 only (pytest.ini turns their
deprecation into an error, so a diffusers that renames them fails the tests instead of drifting)."""


def _set_free_noise(pipe: Any, spec: ShotSpec) -> None:
    """Turn FreeNoise context windows on for long shots, off otherwise, on the cached AnimateDiff pipeline."""
    if spec.uses_free_noise:
        pipe.enable_free_noise(context_length=spec.context_length, context_stride=spec.context_stride)
    elif pipe.free_noise_enabled and not _PRIVATE_FREE_NOISE:
        pipe.disable_free_noise()  # another diffusers: its public call, the private helpers below may be gone
    elif pipe.free_noise_enabled:
        # diffusers 0.42's disable_free_noise() also walks a mid block without motion modules (the v3
        # adapter has none) and crashes; undo the swap block by block as its enable_free_noise() did.
        pipe._free_noise_context_length = None
        for block in [*pipe.unet.down_blocks, pipe.unet.mid_block, *pipe.unet.up_blocks]:
            if hasattr(block, "motion_modules"):
                pipe._disable_free_noise_in_block(block)
    # Swapped-in transformer blocks are new modules, created in train mode.
    pipe.unet.eval()


def _call_pipeline(
    loaded: pipelines.LoadedPipeline,
    spec: ShotSpec,
    control: list["Image.Image"],
    references: list["Image.Image"],
    on_progress: Optional[ProgressFn],
    cancel: Optional[CancelToken],
    applied: Any = None,
) -> tuple[np.ndarray, dict[str, float], dict[str, Any]]:
    import torch

    pipe = loaded.pipe
    preset = presets.preset_spec(spec.preset or "standard")
    if loaded.backend == "animatediff" and preset.scheduler:
        # A distilled motion model runs the scheduler it was distilled with (spec.check refuses any other).
        pipe.scheduler = presets.make_scheduler(preset, loaded.scheduler_config)
    else:
        pipe.scheduler = pipelines.make_scheduler(loaded, spec.scheduler)
    steps = int(spec.steps)
    step_state = {"index": 0}
    step_modules = [pipe.controlnet, pipe.unet] if loaded.backend == "animatediff" else [pipe.transformer]
    timer = _Timer(step_modules, pipe.vae)

    def on_step_end(_pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
        timer.step_ends.append(time.perf_counter())
        step_state["index"] = i + 1
        report(on_progress, LOAD_SHARE + STEPS_SHARE * (i + 1) / steps, f"step {i + 1}/{steps}")
        if cancel is not None:
            cancel.check()
        return {}

    common = dict(
        prompt=applied.prompt(spec.prompt) if applied is not None else spec.prompt,
        negative_prompt=spec.negative_prompt or None,
        num_frames=int(spec.frames),
        height=spec.height,
        width=spec.width,
        num_inference_steps=steps,
        guidance_scale=float(spec.guidance),
        # A CPU generator gives the same noise on every device: same seed, same shot.
        generator=torch.Generator(device="cpu").manual_seed(spec.seed),
        output_type="np",
        callback_on_step_end=on_step_end,
    )
    extra: dict[str, Any] = {}
    hooks = []
    start = time.perf_counter()
    try:
        if loaded.backend == "animatediff":
            _set_free_noise(pipe, spec)
            extra["free_noise"] = spec.uses_free_noise
            ip_kwargs: dict[str, Any] = {}
            if applied is not None and applied.ip is not None:
                # diffusers guides (two UNet passes) only above 1: the embeddings carry a negative half exactly then.
                ip_kwargs = applied.call_kwargs(float(spec.guidance) > 1.0, spec.height, spec.width, pipe.unet.device, pipe.unet.dtype)
                extra["ip_adapter"] = applied.ip.summary()
            output = pipe(
                **common,
                **ip_kwargs,
                conditioning_frames=control,
                controlnet_conditioning_scale=float(spec.strength),
                control_guidance_start=float(spec.structure_start),
                control_guidance_end=float(spec.structure_end),
                decode_chunk_size=16 if loaded.memory_mode == "full" else 2,
            )
        else:
            # WanVACE has no start/end for its control: scale it per step from a hook on the transformer.
            def scale_control(module: Any, args: Any, kwargs: dict) -> tuple[Any, dict]:
                active = _structure_active(step_state["index"], steps, spec.structure_start, spec.structure_end)
                if not active:
                    kwargs["control_hidden_states_scale"] = kwargs["control_hidden_states_scale"] * 0.0
                return args, kwargs

            hooks.append(pipe.transformer.register_forward_pre_hook(scale_control, with_kwargs=True))
            extra["reference_images"] = len(references)
            output = pipe(
                **common,
                video=control,
                reference_images=references or None,
                conditioning_scale=float(spec.strength),
            )
    finally:
        timer.remove()
        for handle in hooks:
            handle.remove()
    total = time.perf_counter() - start
    frames = np.asarray(output.frames[0], dtype=np.float32)
    frames = np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)
    timings = {"call_s": total, **timer.seconds}
    if timer.first_step is not None and timer.step_ends:
        loop = timer.step_ends[-1] - timer.first_step
        timings.update(prepare_s=timer.first_step - start, denoise_s=loop, per_step_s=loop / len(timer.step_ends))
        timings["overhead_s"] = max(0.0, total - loop - sum(timer.seconds.values()))
    extra["scheduler_class"] = type(pipe.scheduler).__name__
    extra["preset"] = presets.record(preset, spec, pipe.scheduler)
    return frames, timings, extra


def _run_folder(out_dir: Path, spec: ShotSpec, digest: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{spec.backend}-seed{spec.seed}-{digest[:8]}"
    target, n = out_dir / base, 1
    while target.exists():
        n += 1
        target = out_dir / f"{base}-{n}"
    return target


def _write_outputs(target: Path, frames: np.ndarray, fps: float, params: dict[str, Any]) -> Path:
    from PIL import Image

    with atomic_dir(target) as tmp:
        (tmp / FRAMES_DIR).mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / FRAMES_DIR / f"{i:04d}.png")
        write_video(tmp / VIDEO_FILE, frames, fps)
        atomic_write_json(tmp / PARAMS_FILE, params)
    return target


def generate(
    spec: ShotSpec,
    depth: DepthVideo,
    concepts: Sequence[Any] = (),
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional[Runtime] = None,
    out_dir: Optional[str | os.PathLike[str]] = None,
) -> ShotResult:
    """Generate one shot that follows `depth` and `spec.prompt`; writes frames, mp4 and params.json in a new folder under `out_dir`."""
    import torch

    if not isinstance(spec, ShotSpec):
        raise InputError("spec must be a ShotSpec")
    if not isinstance(depth, DepthVideo):
        raise InputError("depth must be a DepthVideo (from aas_core.depth); make one with: python -m aas_core depth CLIP")
    spec.check()
    out_root = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
    # Minutes of denoising must not end in a folder that cannot take them: PNG frames are at most about raw size.
    check_writable(out_root, need_bytes=int(spec.frames or 1) * spec.width * spec.height * 3)
    started = time.perf_counter()
    runtime = runtime or pick_runtime()
    if cancel is not None:
        cancel.check()
    control, indices = control_frames(depth, int(spec.frames), (spec.width, spec.height))
    references = _load_references(spec, concepts)
    mode = pipelines.resolve_memory_mode(spec.memory_mode, spec.backend, runtime)
    oom_retries = 0
    while True:
        failure = ""
        try:
            report(on_progress, 0.0 if not oom_retries else LOAD_SHARE, f"loading {spec.backend} ({mode})")
            # Compare keys, not objects: holding the old pipeline here would keep it alive while the new one loads.
            before = getattr(pipelines.current(), "key", None)
            loaded = pipelines.get_pipeline(spec.backend, weights_root, runtime, mode, presets.motion_for(spec))
            load_s = 0.0 if before == loaded.key else loaded.load_s
            report(on_progress, LOAD_SHARE, "denoising")
            with _concepts_applied(loaded.pipe, concepts, spec, weights_root) as applied:
                frames, timings, extra = _call_pipeline(loaded, spec, control, references, on_progress, cancel, applied)
            break
        except torch.OutOfMemoryError as exc:
            failure = str(exc).splitlines()[0] if str(exc) else "out of memory"
        # Out of the except block the traceback (and the tensors its frames hold) is gone, so memory really frees.
        loaded = None
        # Free every model (depth estimator, CLIP, training parts too), not only the pipeline, before going leaner.
        models.release_all()
        leaner = pipelines.leaner_mode(mode, runtime.device)
        if oom_retries >= 1 or leaner is None:
            raise OutOfMemory(
                f"out of {runtime.device} memory making {spec.frames} frames at {spec.width}x{spec.height} "
                f"in memory mode {mode!r}{' (already retried once in a leaner mode)' if oom_retries else ''} "
                f"({failure}): lower the frame count or the size, or choose memory_mode sequential_offload"
            )
        oom_retries += 1
        mode = leaner
    if cancel is not None:
        cancel.check()
    report(on_progress, LOAD_SHARE + STEPS_SHARE, "writing frames and video")
    depth_sha = depth_digest(depth)
    params = {
        "spec": spec.to_dict(),
        "backend": spec.backend,
        "seed": spec.seed,
        "models": loaded.models,
        "tiny": loaded.tiny,
        "runtime": {"device": runtime.device, "dtype": runtime.dtype_name},
        "memory_mode": mode,
        "memory_mode_requested": spec.memory_mode,
        "oom_retries": oom_retries,
        "depth": {**depth.metadata(), "sha256": depth_sha, "frame_indices": indices},
        "concepts": [getattr(c, "name", str(c)) for c in concepts],
        "output_frames": int(frames.shape[0]),
        "versions": {"aas_core": __version__, "diffusers": _version("diffusers"), "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    folder = _run_folder(out_root, spec, json_digest({"spec": spec.to_dict(), "depth": depth_sha}))
    write_start = time.perf_counter()
    timings.update(load_s=load_s)
    params["timings"] = timings
    _write_outputs(folder, frames, spec.fps, params)
    timings.update(write_s=time.perf_counter() - write_start, total_s=time.perf_counter() - started)
    report(on_progress, 1.0, "done")
    return ShotResult(
        frames=frames,
        fps=spec.fps,
        video_path=folder / VIDEO_FILE,
        folder=folder,
        params=params,
        seed=spec.seed,
        backend=spec.backend,
        tiny=loaded.tiny,
        memory_mode=mode,
        timings=timings,
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
