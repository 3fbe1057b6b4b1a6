"""Depth throughput: end-to-end frames/s (decode + retime + estimate + stabilise) vs the estimator alone.

Real-size networks with random weights (written once under --weights), same frames for both
figures. Heavy: run it as
    flock /tmp/aas-heavy.lock timeout 900 python bench/depth.py
Also prints the flicker figures on the shared sample clips (tiny Depth-Anything) when present.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from aas_core.depth import depth_from_clip, load_conditioning_clip, load_estimator  # noqa: E402
from aas_core.depth.stabilize import flicker, normalize, relative_flicker  # noqa: E402
from aas_core.device import pick_runtime  # noqa: E402
from aas_core.weights import write_tiny  # noqa: E402
from tests.helpers import SHARED_CLIPS, moving_square_frames, write_clip  # noqa: E402

REAL_SIZE = {"depth-anything-v2-small": (512, 512), "midas-dpt-hybrid": (384, 384)}
"""Generation sizes at the networks' working sizes (DA-v2 runs at 518, MiDaS at 384 on the short side)."""


def real_size_weights(root: Path, name: str) -> None:
    """Random weights at the real architecture: DA-v2-Small from its hub config, MiDaS as written by tiny."""
    folder = root / name
    if (folder / "aas_tiny.json").is_file():
        return
    if name == "midas-dpt-hybrid":
        write_tiny([name], root)  # controlnet_aux's MiDaS stand-in is already full size
        return
    import json

    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    from aas_core.tiny.depth import DEPTH_ANYTHING_PREPROCESSOR

    config = DepthAnythingConfig(
        backbone_config={
            "model_type": "dinov2", "hidden_size": 384, "num_attention_heads": 6, "image_size": 518,
            "patch_size": 14, "out_indices": [3, 6, 9, 12], "out_features": ["stage3", "stage6", "stage9", "stage12"],
            "reshape_hidden_states": False,
        },
        fusion_hidden_size=64, head_hidden_size=32, neck_hidden_sizes=[48, 96, 192, 384], patch_size=14,
        reassemble_factors=[4, 2, 1, 0.5], reassemble_hidden_size=384,
    )
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(DEPTH_ANYTHING_PREPROCESSOR))
    (folder / "aas_tiny.json").write_text(json.dumps({"name": name, "tiny": True, "note": "real size, random"}))


def bench_estimator(name: str, root: Path, clip: Path, frames: int, runtime, rounds: int = 2) -> dict:
    """Best-of-`rounds` frames/s of depth_from_clip (no cache) and of the estimator alone, interleaved."""
    size = REAL_SIZE[name]
    model = load_estimator(name, root, runtime)
    rgb = load_conditioning_clip(clip, frames=frames, size=size).rgb
    model.predict(rgb[: model.default_batch])  # warm-up (allocations, kernel choice)
    alone, end_to_end = [], []
    for _ in range(rounds):
        # Interleaved so a noisy neighbour on the machine hits both figures alike.
        began = time.perf_counter()
        model.predict(rgb)
        alone.append(time.perf_counter() - began)
        began = time.perf_counter()
        depth_from_clip(clip, frames=frames, size=size, estimator=name, weights_root=root, runtime=runtime, use_cache=False)
        end_to_end.append(time.perf_counter() - began)
    params = sum(p.numel() for p in model.network.parameters())
    return {"name": name, "size": size, "params_m": params / 1e6, "alone_fps": frames / min(alone),
            "e2e_fps": frames / min(end_to_end)}


def flicker_table(root: Path) -> list[tuple[str, dict]]:
    """Flicker of per-frame min/max vs one global scale (+ smoothing) on the shared clips, tiny model."""
    cases = [("bikes.mp4", 1.3, 3.0), ("bikes.mp4", 6.0, 9.6), ("carphone_pristine.mp4", None, None),
             ("carphone_distorted.mp4", None, None), ("bigbuckbunny.mp4", None, None)]
    write_tiny(["depth-anything-v2-small"], root / "tiny")
    model = load_estimator("depth-anything-v2-small", root / "tiny")
    rows = []
    for name, start, end in cases:
        raw = model.predict(load_conditioning_clip(SHARED_CLIPS / name, start, end, 16, (256, 256)).rgb)
        variants = {
            "per-frame min/max": normalize(raw, "per-frame"),
            "global": normalize(raw, "global"),
            "global + smoothing 0.5": normalize(raw, "global", 0.5),
            "global + smoothing 1.0": normalize(raw, "global", 1.0),
        }
        label = f"{name} {start or 0:.1f}-{end if end else 'end'}"
        rows.append((label, {k: (flicker(v), relative_flicker(v)) for k, v in variants.items()}))
    return rows


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(Path(tempfile.gettempdir()) / "aas-bench-depth"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--estimators", nargs="*", default=list(REAL_SIZE))
    args = parser.parse_args()
    root = Path(args.weights)
    runtime = pick_runtime()
    clip = write_clip(root / "bench_clip.mp4", moving_square_frames(frames=48, size=(640, 360), square=96), fps=24)
    print(f"device {runtime.device} {runtime.dtype_name}, {args.frames} frames, random weights at real size")
    print(f"{'estimator':<26} {'size':>9} {'params':>8} {'alone f/s':>10} {'end-to-end f/s':>15} {'ratio':>6}")
    for name in args.estimators:
        real_size_weights(root, name)
        r = bench_estimator(name, root, clip, args.frames, runtime)
        print(f"{name:<26} {r['size'][0]:>4}x{r['size'][1]:<4} {r['params_m']:>7.1f}M {r['alone_fps']:>10.2f} "
              f"{r['e2e_fps']:>15.2f} {r['e2e_fps'] / r['alone_fps']:>6.2f}", flush=True)
    if SHARED_CLIPS.is_dir():
        print("\nflicker (plain / relative to contrast), tiny Depth-Anything, 16 frames at 256x256")
        for label, figures in flicker_table(root):
            print(label)
            for variant, (plain, relative) in figures.items():
                print(f"  {variant:<24} {plain:.4f} / {relative:.3f}")


if __name__ == "__main__":
    main()
