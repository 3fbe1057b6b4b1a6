"""Shot generation at the real architectures (random weights): load, time per step, decode, pipeline overhead.

Full-size random weights are written in the hub layout into a scratch weights folder (once, in a child
process so its memory is not counted), then `generate()` runs through the product's own loader. On a
GPU it also measures peak VRAM per memory mode. Heavy (~14 GB RSS for AnimateDiff): run it under the lock:

    flock /tmp/aas-heavy.lock timeout 900 python bench/generate.py --backend animatediff --frames 8 --size 256x256 --steps 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aas_core.generate.pipelines import BACKEND_MODELS  # noqa: E402

WRITERS = {
    "sd15": "write_tiny_sd15",
    "animatediff-motion-adapter-v1-5-3": "write_tiny_motion_adapter",
    "controlnet-depth-sd15": "write_tiny_controlnet",
    "wan2.1-vace-1.3b": "write_tiny_wan_vace",
}


def _write_real(root: str, backend: str) -> None:
    from aas_core.tiny import diffusion

    for name in BACKEND_MODELS[backend]:
        folder = Path(root) / name
        if not folder.exists():
            getattr(diffusion, WRITERS[name])(folder, real=True)


def _depth(frames: int, size: tuple[int, int]):
    import numpy as np

    from aas_core.depth import DepthVideo

    width, height = size
    depth = np.full((frames, height, width), 0.2, np.float32)
    for i in range(frames):
        x = int(i / max(frames - 1, 1) * (width - width // 4))
        depth[i, height // 4 :, x : x + width // 4] = 0.9
    return DepthVideo(frames=depth, fps=8.0, source="bench")


def _run(backend: str, root: str, frames: int, size: tuple[int, int], steps: int, out: str, mode: str) -> dict:
    from aas_core.device import pick_runtime
    from aas_core.generate import ShotSpec, generate

    spec = ShotSpec(prompt="a knight walking through snow", backend=backend, frames=frames, width=size[0],
                    height=size[1], steps=steps, memory_mode=mode)
    result = generate(spec, _depth(frames, size), weights_root=root, runtime=pick_runtime(), out_dir=out)
    t = result.timings
    return {
        **t,
        "memory_mode": result.memory_mode,
        "loop_share": t["denoise_s"] / t["call_s"],
        "overhead_vs_model_work": t["overhead_s"] / (t["denoise_s"] + t["decode_s"] + t["encode_s"]),
        "outside_pipeline_s": t["total_s"] - t["call_s"] - t["load_s"],
    }


def main() -> None:
    """Parse flags, write weights if needed, run and print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("animatediff", "vace"), default="animatediff")
    parser.add_argument("--frames", type=int, default=None, help="default 8 (AnimateDiff) / 9 (VACE) on CPU, 16/17 on GPU")
    parser.add_argument("--size", default=None, help="WxH; default 256x256 on CPU, 512x512 on GPU")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="shots per memory mode: the first loads (cold), later ones reuse it")
    parser.add_argument("--weights", default=None, help="scratch weights folder to reuse (default: a temp folder, deleted)")
    args = parser.parse_args()

    import torch

    on_gpu = torch.cuda.is_available()
    frames = args.frames or {"animatediff": 16 if on_gpu else 8, "vace": 17 if on_gpu else 9}[args.backend]
    width, height = (int(v) for v in (args.size or ("512x512" if on_gpu else "256x256")).split("x"))
    root = args.weights or tempfile.mkdtemp(prefix="aas-bench-weights-")
    out = tempfile.mkdtemp(prefix="aas-bench-shots-")
    try:
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=_write_real, args=(root, args.backend))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"writing random full-size weights failed (exit {child.exitcode})")
        print(f"weights ready in {time.perf_counter() - start:.1f} s: {root}")
        modes = ("full", "vae_tiling", "model_offload", "sequential_offload") if on_gpu else ("full",)
        device = torch.cuda.get_device_name() if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
        print(f"{args.backend}: {frames} frames {width}x{height}, {args.steps} steps, CFG on, {device}")
        for mode in modes:
            if on_gpu:
                from aas_core.generate import pipelines

                pipelines.release()
                torch.cuda.reset_peak_memory_stats()
            for run in range(args.runs):
                figures = _run(args.backend, root, frames, (width, height), args.steps, out, mode)
                _print(figures, "cold" if run == 0 else "warm", on_gpu)
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if args.weights is None:
            shutil.rmtree(root, ignore_errors=True)


def _print(figures: dict, label: str, on_gpu: bool) -> None:
    import torch

    line = (
        f"[{figures['memory_mode']}, {label}] load {figures['load_s']:.1f} s | prepare {figures['prepare_s']:.2f} s | "
        f"{figures['per_step_s']:.2f} s/step | VAE encode {figures['encode_s']:.2f} s | decode {figures['decode_s']:.2f} s | "
        f"pipeline overhead {figures['overhead_s']:.2f} s = {figures['overhead_vs_model_work']:.1%} of loop+encode+decode | "
        f"outside pipeline {figures['outside_pipeline_s']:.2f} s | total {figures['total_s']:.1f} s"
    )
    if on_gpu:
        line += f" | peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    print(line, flush=True)


if __name__ == "__main__":
    main()
