"""TimeInv training cost at the real SD1.5 size (CLIP-L text encoder, 860 M UNet, VAE), random weights.

Run (heavy: ~6 GB RAM, minutes on a CPU): flock /tmp/aas-heavy.lock timeout 900 python bench/personalize.py
Options: --resolution 256 --steps 3 --batch-size 1 --variants ti ti+ckpt ti+lora [--device cuda --dtype bfloat16]
Prints seconds per training step and memory per step: the activations autograd keeps for backward (exact,
allocator-independent), peak RSS on CPU, peak allocated on CUDA. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aas_core.concepts import TimeInvTrainer, TrainSettings  # noqa: E402
from aas_core.concepts.train import SDParts  # noqa: E402
from aas_core.device import Runtime, pick_runtime  # noqa: E402
from aas_core.tiny.diffusion import (  # noqa: E402
    REAL_SD15_SCHEDULER,
    REAL_SD15_TEXT_ENCODER,
    REAL_SD15_UNET,
    REAL_SD15_VAE,
    config_with,
    write_clip_tokenizer,
)

VARIANTS = {"ti": {}, "ti+ckpt": {"gradient_checkpointing": True}, "ti+lora": {"lora": True}}


class PeakRSS:
    """Samples this process's resident memory every 20 ms; `peak` is the highest seen since `reset()`."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def reset(self) -> int:
        """Start a new window; returns the current RSS."""
        self.peak = now = self._proc.memory_info().rss
        return now

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def real_parts(runtime: Runtime) -> SDParts:
    """Real-size SD1.5 parts with random weights (nothing downloaded)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    torch.manual_seed(0)
    device = runtime.torch_device
    text = CLIPTextModel(CLIPTextConfig(**config_with(REAL_SD15_TEXT_ENCODER, {}))).to(device).eval()
    unet = UNet2DConditionModel.from_config(config_with(REAL_SD15_UNET, {})).to(device, runtime.dtype).eval()
    vae = AutoencoderKL.from_config(config_with(REAL_SD15_VAE, {})).to(device, runtime.dtype).eval()
    for module in (text, unet, vae):
        module.requires_grad_(False)
    return SDParts("sd15", tokenizer, text, vae, unet, config_with(REAL_SD15_SCHEDULER, {}), tiny=False, hub_id="random")


def photos(n: int = 3, side: int = 512):
    """Synthetic photos (content does not change the cost)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def saved_activation_bytes(trainer: TimeInvTrainer) -> int:
    """Bytes of the tensors autograd keeps for backward in one training step (frozen weights excluded)."""
    import torch

    params = {p.untyped_storage().data_ptr() for m in (trainer.parts.unet, trainer.parts.text_encoder) for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = trainer.loss(*trainer.batch(0))
    loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return sum(seen.values())


def bench_variant(parts: SDParts, runtime: Runtime, name: str, args: argparse.Namespace, rss: PeakRSS) -> dict:
    """`args.warmup` untimed steps, then `args.steps` timed steps of one variant."""
    import torch

    cuda = runtime.device == "cuda"
    settings = TrainSettings(
        buckets=8, vectors=2, batch_size=args.batch_size, resolution=args.resolution, views_per_photo=1, **VARIANTS[name]
    )
    start_rss = rss.reset()
    trainer = TimeInvTrainer(parts, "bench", "woman", photos(), settings, runtime)
    try:
        for _ in range(args.warmup):
            # The first steps of a process pay one-off costs (allocator growth, autograd caches);
            # a 1500-step training lives in the steady state.
            trainer.step()
        activations = saved_activation_bytes(trainer)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss.reset()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            trainer.step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        row = {
            "variant": name,
            "device": runtime.device,
            "dtype": runtime.dtype_name,
            "resolution": args.resolution,
            "batch_size": args.batch_size,
            "s_per_step_median": round(statistics.median(times), 2),
            "s_per_step_all": [round(t, 2) for t in times],
            "saved_activations_mb": round(activations / 2**20),
            "rss_before_gb": round(start_rss / 2**30, 2),
            "peak_rss_during_steps_gb": round(rss.peak / 2**30, 2),
            "step_extra_rss_gb": round((rss.peak - start_rss) / 2**30, 2),
        }
        if cuda:
            row["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return row
    finally:
        trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    args = parser.parse_args()
    runtime = pick_runtime(args.device, args.dtype)
    rss = PeakRSS()
    t0 = time.perf_counter()
    parts = real_parts(runtime)
    params = {k: sum(p.numel() for p in getattr(parts, k).parameters()) / 1e6 for k in ("text_encoder", "unet", "vae")}
    print(json.dumps({"build_s": round(time.perf_counter() - t0, 1), "params_m": {k: round(v) for k, v in params.items()}}))
    for name in args.variants:
        print(json.dumps(bench_variant(parts, runtime, name, args, rss)), flush=True)
    rss.close()


if __name__ == "__main__":
    main()
