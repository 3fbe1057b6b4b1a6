"""`generate`: one depth-guided shot from a prompt and a depth folder (or a clip, whose depth is made first)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from aas_core.cli import add_command
from aas_core.errors import InputError
from aas_core.generate.presets import PRESETS
from aas_core.generate.spec import BACKENDS, MEMORY_MODES, SCHEDULERS


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512 (width x height), got {text!r}") from None
    return width, height


def _depth(args: argparse.Namespace, frames: Optional[int], size: tuple[int, int]):
    from aas_core.depth import DepthVideo

    path = Path(args.depth)
    if path.is_dir():
        return DepthVideo.load(path)
    if not path.is_file():
        raise InputError(f"--depth {path} is neither a depth folder nor a video file; check the path")
    try:
        from aas_core.depth import depth_from_clip
    except ImportError:
        raise InputError("depth extraction from a clip is not available in this build; pass a depth folder instead") from None
    return depth_from_clip(path, start=args.clip_start, end=args.clip_end, frames=frames, size=size, weights_root=args.weights)


def _concepts(args: argparse.Namespace) -> list:
    """The concepts named as `<name>` in the prompt (AnimateDiff concepts must be trained on its base model)."""
    from aas_core.concepts import concept_names_in, load_concepts

    names = concept_names_in(args.prompt)
    if not names:
        return []
    return load_concepts(names, args.weights, base_model="sd15" if args.backend == "animatediff" else None)


def _generate(args: argparse.Namespace) -> dict:
    from aas_core.device import pick_runtime
    from aas_core.generate import ShotSpec, generate
    from aas_core.progress import tqdm_progress

    width, height = args.size
    spec = ShotSpec(
        prompt=args.prompt,
        negative_prompt=args.negative,
        backend=args.backend,
        preset=args.preset,
        ip_scale=args.ip_scale,
        frames=args.frames,
        fps=args.fps,
        width=width,
        height=height,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        scheduler=args.scheduler,
        strength=args.strength,
        structure_start=args.structure_start,
        structure_end=args.structure_end,
        memory_mode=args.memory_mode,
        context_length=args.context_length,
        context_stride=args.context_stride,
        reference_images=tuple(args.reference or ()),
    )
    depth = _depth(args, spec.frames, (width, height))
    concepts = _concepts(args)
    progress, close = tqdm_progress("generate", disable=args.json)
    try:
        result = generate(
            spec,
            depth,
            concepts=concepts,
            on_progress=progress,
            weights_root=args.weights,
            runtime=pick_runtime(),
            out_dir=args.out,
        )
    finally:
        close()
    label = " (tiny random weights: workflow preview only)" if result.tiny else ""
    return {
        "folder": str(result.folder),
        "video": str(result.video_path),
        "frames": result.num_frames,
        "fps": result.fps,
        "seed": result.seed,
        "backend": result.backend,
        "tiny": result.tiny,
        "memory_mode": result.memory_mode,
        "timings": result.timings,
        "_text": f"shot written to {result.video_path}{label}\n"
        f"{result.num_frames} frames, seed {result.seed}, {result.backend}, memory mode {result.memory_mode}, "
        f"{result.timings.get('total_s', 0.0):.1f} s",
    }


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `generate` command."""
    p = add_command(sub, "generate", _generate, "generate a shot that follows a depth sequence and a prompt")
    p.add_argument("--prompt", required=True, help="what the shot shows; <name> uses a trained concept")
    p.add_argument("--negative", default="", help="what to avoid (negative prompt)")
    p.add_argument("--depth", required=True, help="a depth folder (depth.npy + depth.json) or a video clip")
    p.add_argument("--clip-start", type=float, default=None, help="with a clip: start of the span in seconds")
    p.add_argument("--clip-end", type=float, default=None, help="with a clip: end of the span in seconds")
    p.add_argument("--backend", choices=BACKENDS, default="animatediff")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="standard (25 steps + CFG) or fast (AnimateDiff-Lightning, 4 steps, no CFG); "
                        "default: fast on a Hugging Face Space, else standard")
    p.add_argument("--ip-scale", type=float, default=None,
                   help="weight of instant (IP-Adapter) characters' photos in this shot, 0..2 (default: each concept's own)")
    p.add_argument("--strength", type=float, default=0.8, help="structure strength 0..2 (how hard depth steers)")
    p.add_argument("--structure-start", type=float, default=0.0, help="fraction of denoising where depth starts guiding")
    p.add_argument("--structure-end", type=float, default=1.0, help="fraction of denoising where depth stops guiding")
    p.add_argument("--frames", type=int, default=None, help="frame count (default 16; VACE needs 4k+1, default 17)")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, 25 or 4; 30 VACE)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the preset's, 7.5 or 1 = off; 5 VACE)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="default")
    p.add_argument("--size", type=_size, default=(512, 512), help="WIDTHxHEIGHT (default 512x512)")
    p.add_argument("--memory-mode", choices=MEMORY_MODES, default="auto")
    p.add_argument("--context-length", type=int, default=16, help="FreeNoise window for long AnimateDiff shots")
    p.add_argument("--context-stride", type=int, default=4, help="FreeNoise window stride")
    p.add_argument("--reference", action="append", help="reference image of a character (VACE; repeatable)")
    p.add_argument("--out", default=None, help="folder under which the shot's own folder is made (default outputs/shots)")
    p.add_argument("--weights", default=None, help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")
