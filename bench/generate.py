"""Shot generation at the real architectures (random weights): presets side by side, time per step, denoiser calls.

Full-size random weights are written in the hub layout into a scratch weights folder (once, in a child
process so its memory is not counted), then `generate()` runs through the product's own loader, once
per preset (`standard`: AnimateDiff v3 + CFG; `fast`: AnimateDiff-Lightning, no CFG) and memory mode
(GPU only). Each run prints one JSON row: measured timings for the steps it ran, the denoiser calls it
made (and their batch: 2 = CFG), and `shot_s`, the time of a whole shot at the preset's own step count
(extrapolated from the measured per-step time when fewer steps ran: `extrapolated` says so). A last row
compares the presets. Heavy (~14 GB RSS for AnimateDiff in float32, about half in bfloat16): use the lock:

    flock /tmp/aas-heavy.lock timeout 3000 env AAS_DTYPE=bfloat16 python bench/generate.py --frames 8 --size 256x256 --steps 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aas_core.generate.pipelines import pipeline_models
from aas_core.generate.presets import PRESET_TABLE, PRESETS, denoiser_passes

WRITERS = {
    "sd15": "aas_core.tiny.diffusion:write_tiny_sd15",
    "animatediff-motion-adapter-v1-5-3": "aas_core.tiny.diffusion:write_tiny_motion_adapter",
    "animatediff-lightning": "aas_core.tiny.adapters:write_tiny_lightning",
    "controlnet-depth-sd15": "aas_core.tiny.diffusion:write_tiny_controlnet",
    "wan2.1-vace-1.3b": "aas_core.tiny.diffusion:write_tiny_wan_vace",
}


def _models(backend: str, presets: list[str]) -> list[str]:
    """Every registry model the runs need (AnimateDiff presets swap the motion module)."""
    if backend != "animatediff":
        return list(pipeline_models(backend))
    names: list[str] = []
    for preset in presets:
        names += [n for n in pipeline_models(backend, PRESET_TABLE[preset].motion(PRESET_TABLE[preset].steps)) if n not in names]
    return names


def _write_real(root: str, names: list[str]) -> None:
    import importlib

    for name in names:
        folder = Path(root) / name
        if not folder.exists():
            module, function = WRITERS[name].split(":")
            getattr(importlib.import_module(module), function)(folder, real=True)


def _depth(frames: int, size: tuple[int, int]):
    import numpy as np

    from aas_core.depth import DepthVideo

    width, height = size
    depth = np.full((frames, height, width), 0.2, np.float32)
    for i in range(frames):
        x = int(i / max(frames - 1, 1) * (width - width // 4))
        depth[i, height // 4 :, x : x + width // 4] = 0.9
    return DepthVideo(frames=depth, fps=8.0, source="bench")


class _Calls:
    """Counts the motion UNet's calls and their batch while installed."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.handle: Any = None

    def install(self) -> None:
        from aas_core.generate import pipelines

        loaded = pipelines.current()
        self.remove()
        if loaded is not None:
            self.handle = loaded.pipe.unet.register_forward_pre_hook(
                lambda m, args, kwargs: self.batches.append(int((args[0] if args else kwargs["sample"]).shape[0])),
                with_kwargs=True,
            )

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def _run(spec: Any, full: Any, root: str, out: str, calls: _Calls) -> dict:
    from aas_core.device import pick_runtime
    from aas_core.generate import generate

    calls.batches.clear()
    cpu = time.process_time()
    result = generate(spec, _depth(spec.frames, (spec.width, spec.height)), weights_root=root, runtime=pick_runtime(), out_dir=out)
    cpu = time.process_time() - cpu
    t = result.timings
    fixed = t["call_s"] - t["denoise_s"]
    # CPU seconds are what this process used, whatever else shares the cores: the robust figure on a busy machine.
    step_cpu = cpu * t["denoise_s"] / t["total_s"] / int(spec.steps)
    record = result.params.get("preset", {})
    return {
        "backend": spec.backend,
        "preset": spec.preset,
        "memory_mode": result.memory_mode,
        "dtype": result.params["runtime"]["dtype"],
        "frames": spec.frames,
        "size": f"{spec.width}x{spec.height}",
        "scheduler": record.get("scheduler", result.params.get("scheduler_class")),
        "guidance": spec.guidance,
        "steps_run": spec.steps,
        "steps_per_shot": full.steps,
        "unet_calls_run": len(calls.batches),
        "unet_batch": sorted(set(calls.batches)),
        "denoiser_passes_per_shot": denoiser_passes(full),
        "per_step_s": round(t["per_step_s"], 3),
        "fixed_s": round(fixed, 2),
        "call_s": round(t["call_s"], 2),
        "shot_s": round(fixed + t["per_step_s"] * int(full.steps or 0), 2),
        "cpu_s": round(cpu, 1),
        "per_step_cpu_s": round(step_cpu, 2),
        "shot_cpu_s": round(cpu - step_cpu * int(spec.steps) + step_cpu * int(full.steps or 0), 1),
        "extrapolated": spec.steps != full.steps,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    """Parse flags, write weights if needed, run each preset (and memory mode on a GPU), print JSON rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("animatediff", "vace"), default="animatediff")
    parser.add_argument("--preset", choices=(*PRESETS, "both"), default="both", help="AnimateDiff preset(s) to run")
    parser.add_argument("--frames", type=int, default=None, help="default 8 (AnimateDiff) / 9 (VACE) on CPU, 16/17 on GPU")
    parser.add_argument("--size", default=None, help="WxH; default 256x256 on CPU, 512x512 on GPU")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps actually run per shot for the standard preset (default: its own 25); fast always runs its own")
    parser.add_argument("--runs", type=int, default=1, help="shots per setting (the pipeline is loaded once before them)")
    parser.add_argument("--weights", default=None, help="scratch weights folder to reuse (default: a temp folder, deleted)")
    args = parser.parse_args()

    import torch

    on_gpu = torch.cuda.is_available()
    presets = [None] if args.backend == "vace" else (list(PRESETS) if args.preset == "both" else [args.preset])
    frames = args.frames or {"animatediff": 16 if on_gpu else 8, "vace": 17 if on_gpu else 9}[args.backend]
    width, height = (int(v) for v in (args.size or ("512x512" if on_gpu else "256x256")).split("x"))
    root = args.weights or tempfile.mkdtemp(prefix="aas-bench-weights-")
    out = tempfile.mkdtemp(prefix="aas-bench-shots-")
    try:
        start = time.perf_counter()
        names = _models(args.backend, [p for p in presets if p])
        child = multiprocessing.get_context("spawn").Process(target=_write_real, args=(root, names))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"writing random full-size weights failed (exit {child.exitcode})")
        device = torch.cuda.get_device_name() if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
        _emit({"weights_ready_s": round(time.perf_counter() - start, 1), "models": names, "device": device})
        modes = ("full", "vae_tiling", "model_offload", "sequential_offload") if on_gpu else ("full",)
        rows = []
        for preset in presets:
            for mode in modes:
                rows += _runs(args, preset, root, frames, (width, height), out, mode, on_gpu)
        _emit_comparison(rows)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if args.weights is None:
            shutil.rmtree(root, ignore_errors=True)


def _runs(args: argparse.Namespace, preset: Optional[str], root: str, frames: int, size: tuple[int, int], out: str,
          mode: str, on_gpu: bool) -> list[dict]:
    import torch

    from aas_core.device import pick_runtime
    from aas_core.generate import ShotSpec, pipelines
    from aas_core.generate.presets import motion_for

    pipelines.release()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    common = dict(backend=args.backend, preset=preset, frames=frames, width=size[0], height=size[1], memory_mode=mode)
    spec = ShotSpec(prompt="a knight walking through snow", steps=None if preset == "fast" else args.steps, **common)
    full = ShotSpec(prompt="x", **common)
    # Load first (timed on its own), so every run's denoiser calls can be counted.
    start = time.perf_counter()
    pipelines.get_pipeline(spec.backend, root, pick_runtime(), pipelines.resolve_memory_mode(mode, spec.backend, pick_runtime()),
                           motion_for(spec))
    load_s = time.perf_counter() - start
    calls, rows = _Calls(), []
    calls.install()
    for run in range(args.runs):
        row = {**_run(spec, full, root, out, calls), "run": run + 1, "load_s": round(load_s, 1) if run == 0 else 0.0}
        if on_gpu:
            row["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        _emit(row)
        rows.append(row)
    calls.remove()
    return rows


def _emit_comparison(rows: list[dict]) -> None:
    """fast vs standard at the same frames, size and memory mode (last run of each)."""
    warm = {(r["preset"], r["memory_mode"]): r for r in rows}
    for (preset, mode), fast in warm.items():
        standard = warm.get(("standard", mode))
        if preset != "fast" or standard is None:
            continue
        _emit({
            "compare": "fast/standard", "memory_mode": mode, "frames": fast["frames"], "size": fast["size"],
            "shot_s_ratio": round(fast["shot_s"] / standard["shot_s"], 3),
            "denoise_s_ratio": round(fast["per_step_s"] * fast["steps_per_shot"] / (standard["per_step_s"] * standard["steps_per_shot"]), 3),
            "per_step_ratio": round(fast["per_step_s"] / standard["per_step_s"], 3),
            "shot_cpu_s_ratio": round(fast["shot_cpu_s"] / standard["shot_cpu_s"], 3),
            "per_step_cpu_ratio": round(fast["per_step_cpu_s"] / standard["per_step_cpu_s"], 3),
            "denoiser_passes": [fast["denoiser_passes_per_shot"], standard["denoiser_passes_per_shot"]],
            "goal": "shot_s_ratio <= 0.15",
        })


def _emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
