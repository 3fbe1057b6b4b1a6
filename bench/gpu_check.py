"""GPU check: one prepared run of every engine at real size (random weights), printed as one JSON object.

Made for a GPU lent for minutes (one H200, <= 8 minutes): it writes full-size random weights in the hub
layouts into a scratch folder, then measures through the product's own code paths:

  animatediff   AnimateDiff + depth ControlNet, 16 frames 512x512, in each memory mode: s/shot, s/step, peak VRAM
  fast_preset   the same with the `fast` preset (AnimateDiff-Lightning, 4 steps), when presets exist
  vace          Wan2.1-VACE 1.3B, 33 frames 480x832 (the text encoder is a one-layer UMT5 at full width)
  timeinv       one TimeInv training step in bfloat16 (s, peak VRAM)
  depth, clip   Depth-Anything-V2-Small and CLIP ViT-B/32 throughput at a few batch sizes
  oom_retry     the out-of-memory retry, forced with torch.cuda.set_per_process_memory_fraction

Each section is timed and fenced (an error is recorded, the next section runs); sections that would
start after the time budget are skipped and say so. The same code runs anywhere in seconds with tiny
models:  python bench/gpu_check.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES: tuple[str, ...] = ("full", "vae_tiling", "model_offload", "sequential_offload")
SECTIONS: tuple[str, ...] = ("weights", "animatediff", "fast_preset", "vace", "timeinv", "depth", "clip", "oom_retry")
ANIMATEDIFF = ("sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15")
VACE = "wan2.1-vace-1.3b"


@dataclass(frozen=True)
class Sizes:
    """Shapes of every measurement (the issue's real sizes, or tiny ones for a CPU smoke run)."""

    frames: int
    width: int
    height: int
    steps: int
    vace_frames: int
    vace_width: int
    vace_height: int
    vace_steps: int
    depth_side: int
    depth_batches: tuple[int, ...]
    clip_batches: tuple[int, ...]
    train_batch: int
    train_resolution: int


REAL = Sizes(16, 512, 512, 8, 33, 832, 480, 4, 512, (1, 4, 8, 16), (32, 64, 128), 4, 512)
TINY = Sizes(2, 64, 64, 1, 5, 32, 32, 1, 64, (1, 2), (2, 4), 1, 64)


class Check:
    """One run: device, sizes, scratch weights folder, time budget, and the results so far."""

    def __init__(self, device: str, tiny: bool, budget_s: float, work: Path) -> None:
        from aas_core.device import pick_runtime

        self.device, self.tiny, self.budget_s = device, tiny, budget_s
        self.sizes = TINY if tiny else REAL
        self.runtime = pick_runtime(device)
        self.root = work / "weights"
        self.out = work / "out"
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {}

    @property
    def cuda(self) -> bool:
        """Whether this run measures a CUDA device (peak VRAM, offload modes, the memory fraction)."""
        return self.device.startswith("cuda")

    def elapsed(self) -> float:
        """Seconds since the check started."""
        return time.perf_counter() - self.started

    def run(self, name: str, section: Callable[["Check"], dict[str, Any]]) -> None:
        """Run one section, recording its result, error or skip, and its seconds."""
        if self.elapsed() > self.budget_s:
            self.results[name] = {"skipped": f"time budget of {self.budget_s:.0f} s used up"}
            return
        began = time.perf_counter()
        try:
            result = section(self)
        except Exception as exc:  # noqa: BLE001 - a failing section is a finding; the others still run
            result = {"error": f"{type(exc).__name__}: {str(exc)[:500]}", "trace": traceback.format_exc(limit=4)[-1500:]}
        finally:
            _free()
        result["section_s"] = round(time.perf_counter() - began, 2)
        self.results[name] = result

    @contextlib.contextmanager
    def peak(self) -> Iterator[dict[str, Any]]:
        """Measure peak allocated VRAM (GiB) of the block into the yielded dict (nothing on CPU)."""
        import torch

        box: dict[str, Any] = {}
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        yield box
        if self.cuda:
            torch.cuda.synchronize()
            box["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)


def _free() -> None:
    from aas_core import models

    models.release_all()
    models.free_memory()


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


# --- sections ---------------------------------------------------------------------------------------


def env_info(check: Check) -> dict[str, Any]:
    """Versions and the device, so figures can be compared across machines."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "device": check.device,
        "dtype": check.runtime.dtype_name, "tiny": check.tiny, "sizes": asdict(check.sizes),
    }
    for package in ("diffusers", "transformers", "open_clip", "controlnet_aux", "av", "faiss"):
        try:
            info[package] = getattr(importlib.import_module(package), "__version__", "present")
        except ImportError:
            info[package] = None
    if check.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, vram_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def write_weights(check: Check) -> dict[str, Any]:
    """Random weights in the hub layouts: tiny writers, or the same writers at full size (built on the device)."""
    import torch

    from aas_core.fsutil import atomic_write_json
    from aas_core.registry import get_spec
    from aas_core.weights import TINY_MARKER, write_tiny

    names = [*ANIMATEDIFF, VACE, "depth-anything-v2-small", "clip-vit-b-32"]
    written: dict[str, float] = {}
    if check.tiny:
        for name in names:
            began = time.perf_counter()
            write_tiny([name], check.root)
            written[name] = round(time.perf_counter() - began, 2)
    else:
        for name in names:
            began = time.perf_counter()
            folder = check.root / name
            folder.mkdir(parents=True, exist_ok=True)
            # Parameters are initialised on the GPU (seconds, not minutes on the CPU), then saved.
            with torch.device(check.device):
                _REAL_WRITERS[name](folder)
            atomic_write_json(folder / TINY_MARKER, {"name": name, "hub_id": get_spec(name).hub_id, "tiny": True, "real_size": True})
            written[name] = round(time.perf_counter() - began, 2)
    lightning = _write_lightning(check)
    sizes = {n: round(sum(p.stat().st_size for p in (check.root / n).rglob("*") if p.is_file()) / 2**30, 3) for n in names}
    return {"seconds": written, "gib": sizes, "lightning": lightning}


def _write_real_diffusion(writer: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        module, func = writer.split(":")
        getattr(importlib.import_module(module), func)(folder, None, real=True)

    return write


def _write_real_depth_anything(folder: Path) -> None:
    """Depth-Anything-V2-Small's real architecture (DINOv2-S backbone, 24.8 M parameters)."""
    import json

    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    from aas_core.tiny.depth import DEPTH_ANYTHING_PREPROCESSOR, tiny_depth_anything_config

    config = tiny_depth_anything_config()
    config["backbone_config"].update(hidden_size=384, intermediate_size=1536, num_attention_heads=6, num_hidden_layers=12,
                                     out_features=["stage3", "stage6", "stage9", "stage12"], out_indices=[3, 6, 9, 12])
    config.update(fusion_hidden_size=64, head_hidden_size=32, neck_hidden_sizes=[48, 96, 192, 384], reassemble_hidden_size=384)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(**config)).eval().save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(DEPTH_ANYTHING_PREPROCESSOR, indent=2))


def _write_real_clip(folder: Path) -> None:
    """CLIP ViT-B/32 at its real size, in the open_clip local-dir layout."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from aas_core.tiny.clip import tiny_open_clip_config

    config = tiny_open_clip_config(512)
    config["model_cfg"] = open_clip.get_model_config("ViT-B-32")
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    model = open_clip.CLIP(**config["model_cfg"])
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))


_REAL_WRITERS: dict[str, Callable[[Path], None]] = {
    "sd15": _write_real_diffusion("aas_core.tiny.diffusion:write_tiny_sd15"),
    "animatediff-motion-adapter-v1-5-3": _write_real_diffusion("aas_core.tiny.diffusion:write_tiny_motion_adapter"),
    "controlnet-depth-sd15": _write_real_diffusion("aas_core.tiny.diffusion:write_tiny_controlnet"),
    VACE: _write_real_diffusion("aas_core.tiny.diffusion:write_tiny_wan_vace"),
    "depth-anything-v2-small": _write_real_depth_anything,
    "clip-vit-b-32": _write_real_clip,
}


def _write_lightning(check: Check) -> str:
    """The fast preset's motion module: one checkpoint written, the other step counts linked to it."""
    try:
        adapters = importlib.import_module("aas_core.tiny.adapters")
        from aas_core.registry import get_spec
    except ImportError as exc:
        return f"not written: {exc}"
    try:
        spec = get_spec("animatediff-lightning")
    except ValueError:
        return "not written: no animatediff-lightning in the registry"
    import torch
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    from aas_core.fsutil import atomic_write_json
    from aas_core.weights import TINY_MARKER

    folder = check.root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device(check.device):
        adapter = MotionAdapter.from_config(adapters.lightning_config(tiny=check.tiny))
    first, *others = [spec.options["file"].format(steps=s) for s in spec.options["steps"]]
    save_file({k: v.contiguous().cpu() for k, v in adapter.state_dict().items()}, str(folder / first))
    for name in others:  # random weights either way: one file stands for every step count
        (folder / name).symlink_to(first)
    atomic_write_json(folder / TINY_MARKER, {"name": spec.name, "hub_id": spec.hub_id, "tiny": True})
    return "written"


def _bar_depth(frames: int, width: int, height: int) -> Any:
    """A near bar sliding over a far background: a real-looking depth sequence without a video file."""
    import numpy as np

    from aas_core.depth.video import DepthVideo

    depth = np.full((frames, height, width), 0.1, np.float32)
    bar = max(2, width // 8)
    for i in range(frames):
        x = (i * width // max(frames, 1)) % max(1, width - bar)
        depth[i, :, x : x + bar] = 1.0
    return DepthVideo(frames=depth, fps=8.0, source="gpu_check bar")


def _shot(check: Check, memory_mode: str, **overrides: Any) -> dict[str, Any]:
    """One generate() call through the product's path; its timings, memory mode and peak VRAM."""
    from aas_core.generate import ShotSpec, generate

    s = check.sizes
    fields: dict[str, Any] = dict(prompt="a red fox running through snow", frames=s.frames, width=s.width, height=s.height,
                                  steps=s.steps, seed=0, memory_mode=memory_mode)
    fields.update(overrides)
    spec = ShotSpec(**fields)
    depth = _bar_depth(int(spec.frames or s.frames), spec.width, spec.height)
    began = time.perf_counter()
    with check.peak() as peak:
        result = generate(spec, depth, weights_root=check.root, runtime=check.runtime, out_dir=check.out)
    timings = {k: _round(v) for k, v in result.timings.items()}
    per_step = timings.get("per_step_s")
    return {
        "memory_mode": result.memory_mode, "steps": spec.steps, "frames": result.num_frames, "shot_s": round(time.perf_counter() - began, 3),
        "s_per_step": per_step, "oom_retries": result.params.get("oom_retries", 0), "timings": timings, **peak,
    }


def animatediff(check: Check) -> dict[str, Any]:
    """AnimateDiff + ControlNet in each memory mode (offloading only where there is a GPU to offload from)."""
    modes = MODES if check.cuda else MODES[:2]
    out: dict[str, Any] = {}
    for mode in modes:
        if check.elapsed() > check.budget_s:
            out[mode] = {"skipped": "time budget used up"}
            continue
        try:
            out[mode] = _shot(check, mode)
        except Exception as exc:  # noqa: BLE001 - one mode failing (e.g. OOM in full) must not hide the others
            out[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        _free()
    return out


def fast_preset(check: Check) -> dict[str, Any]:
    """The `fast` preset (AnimateDiff-Lightning, few steps, no CFG), if this checkout has presets."""
    try:
        presets = importlib.import_module("aas_core.generate.presets")
    except ImportError:
        return {"skipped": "aas_core.generate.presets is not in this checkout"}
    preset = presets.preset_spec("fast")
    steps = min(preset.allowed_steps) if check.tiny else preset.steps
    return _shot(check, "full", preset="fast", steps=steps, guidance=preset.guidance)


def vace(check: Check) -> dict[str, Any]:
    """Wan2.1-VACE 1.3B at 33 frames 480x832 (text encoder: one full-width UMT5 layer)."""
    s = check.sizes
    return _shot(check, "full", backend="vace", frames=s.vace_frames, width=s.vace_width, height=s.vace_height, steps=s.vace_steps)


def timeinv(check: Check) -> dict[str, Any]:
    """One TimeInv training step on SD1.5 in bfloat16 (after one warm-up step)."""
    import numpy as np
    from PIL import Image

    from aas_core.concepts.train import TimeInvTrainer, TrainSettings, load_parts
    from aas_core.device import Runtime

    runtime = Runtime(check.runtime.device, "bfloat16")
    s = check.sizes
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (s.train_resolution, s.train_resolution, 3), dtype=np.uint8)) for _ in range(3)]
    settings = TrainSettings(steps=4, batch_size=s.train_batch, resolution=s.train_resolution, views_per_photo=1,
                             validate_every=0, checkpoint_every=0)
    with check.peak() as load_peak:
        parts = load_parts("sd15", check.root, runtime)
    trainer = TimeInvTrainer(parts, "gpucheck", "fox", photos, settings, runtime)
    try:
        trainer.step()  # warm-up: kernels, autotuning
        began = time.perf_counter()
        repeats = 1 if check.tiny else 3
        with check.peak() as peak:
            losses = [trainer.step() for _ in range(repeats)]
            _sync(check)
        step_s = (time.perf_counter() - began) / repeats
    finally:
        trainer.close()
    return {"dtype": "bfloat16", "batch": s.train_batch, "resolution": s.train_resolution, "s_per_step": round(step_s, 4),
            "loss_finite": bool(np.isfinite(losses).all()), "load_peak_vram_gib": load_peak.get("peak_vram_gib"), **peak}


def depth(check: Check) -> dict[str, Any]:
    """Depth-Anything-V2-Small frames per second at a few batch sizes."""
    import numpy as np

    from aas_core.depth.estimators import load_estimator

    estimator = load_estimator("depth-anything-v2-small", check.root, check.runtime)
    side = check.sizes.depth_side
    out: dict[str, Any] = {"input": f"{side}x{side}"}
    for batch in check.sizes.depth_batches:
        frames = np.random.default_rng(batch).integers(0, 255, (batch, side, side, 3), dtype=np.uint8)
        estimator.predict_batch(frames)  # warm-up
        _sync(check)
        with check.peak() as peak:
            began = time.perf_counter()
            for _ in range(3):
                estimator.predict_batch(frames)
            _sync(check)
            seconds = (time.perf_counter() - began) / 3
        out[f"batch_{batch}"] = {"frames_per_s": round(batch / seconds, 2), "s_per_batch": round(seconds, 4), **peak}
    return out


def clip(check: Check) -> dict[str, Any]:
    """CLIP ViT-B/32 image embeddings per second at a few batch sizes (the library's embedder)."""
    import numpy as np

    try:
        from aas_core.library.embed import ClipEmbedder
    except ImportError as exc:
        return {"skipped": f"library embedder not importable: {exc}"}
    embedder = ClipEmbedder.load("clip-vit-b-32", check.root, check.runtime)
    out: dict[str, Any] = {"input": f"{embedder.image_size}px"}
    for batch in check.sizes.clip_batches:
        images = list(np.random.default_rng(batch).integers(0, 255, (batch, 256, 256, 3), dtype=np.uint8))
        embedder.embed_images(images, batch_size=batch)  # warm-up
        with check.peak() as peak:
            began = time.perf_counter()
            for _ in range(3):
                embedder.embed_images(images, batch_size=batch)
            _sync(check)
            seconds = (time.perf_counter() - began) / 3
        out[f"batch_{batch}"] = {"images_per_s": round(batch / seconds, 1), "s_per_batch": round(seconds, 4), **peak}
    return out


def oom_retry(check: Check) -> dict[str, Any]:
    """Cap this process's VRAM between the full and the vae_tiling peaks: `full` must OOM, the retry must cope."""
    if not check.cuda:
        return {"skipped": "needs CUDA (torch.cuda.set_per_process_memory_fraction)"}
    import torch

    from aas_core.generate.spec import OutOfMemory

    runs = check.results.get("animatediff", {})
    full = runs.get("full", {}).get("peak_vram_gib")
    lean = runs.get("vae_tiling", {}).get("peak_vram_gib")
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    cap = (full + lean) / 2 if full and lean and full > lean else 0.6 * (full or total * 0.3)
    fraction = min(0.95, cap / total)
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        result = _shot(check, "full")
        outcome: dict[str, Any] = {"retried": result["oom_retries"] > 0, **result}
    except OutOfMemory as exc:
        outcome = {"retried": True, "gave_up": str(exc)[:300]}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    return {"cap_gib": round(cap, 2), "fraction": round(fraction, 4), **outcome}


def _sync(check: Check) -> None:
    if check.cuda:
        import torch

        torch.cuda.synchronize()


RUNNERS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "weights": write_weights, "animatediff": animatediff, "fast_preset": fast_preset, "vace": vace,
    "timeinv": timeinv, "depth": depth, "clip": clip, "oom_retry": oom_retry,
}


def run_check(device: str, tiny: bool, budget_s: float, sections: tuple[str, ...] = SECTIONS,
              work: Optional[Path] = None) -> dict[str, Any]:
    """Run the chosen sections in order into a scratch folder; returns the report (what main prints)."""
    with tempfile.TemporaryDirectory(prefix="aas-gpu-check-") as scratch:
        check = Check(device, tiny, budget_s, Path(work) if work else Path(scratch))
        check.results["env"] = env_info(check)
        for name in sections:
            check.run(name, RUNNERS[name])
        return {"check": "gpu_check", "total_s": round(check.elapsed(), 2), "budget_s": budget_s, **check.results}


def main(argv: Optional[list[str]] = None) -> int:
    """Parse flags, run the check, print one JSON object (and write it to --out)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda (default when present) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny random models: the same path in seconds (CI, no GPU)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no section after this many seconds (default 420)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--work", help="scratch folder for the weights and shots (default: a temporary folder)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = [s for s in sections if s not in RUNNERS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    report = run_check(args.device, args.tiny, args.budget_s, sections, Path(args.work) if args.work else None)
    text = json.dumps(report, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
