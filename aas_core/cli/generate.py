"""`generate`: one depth-guided shot from a prompt and a depth folder (or a clip, whose depth is made first)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from aas_core.cli import add_command, given
from aas_core.errors import InputError
from aas_core.generate.presets import PRESETS
from aas_core.generate.spec import BACKENDS, MEMORY_MODES, SCHEDULERS, ShotSpec
from aas_core.registry import BACKEND_BASE_MODEL

_D = SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(ShotSpec) if f.default is not dataclasses.MISSING})
"""ShotSpec's own defaults, for the help text."""


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


def _concepts(args: argparse.Namespace, backend: str) -> list:
    """The concepts named as `<name>` in the prompt (AnimateDiff concepts must be trained on its base model)."""
    from aas_core.concepts import concept_names_in, load_concepts

    names = concept_names_in(args.prompt)
    if not names:
        return []
    return load_concepts(names, args.weights, base_model=BACKEND_BASE_MODEL[backend] if backend == "animatediff" else None)


def _generate(args: argparse.Namespace) -> dict:
    from aas_core.device import pick_runtime
    from aas_core.generate import ShotSpec, generate
    from aas_core.progress import tqdm_progress

    spec = ShotSpec(
        prompt=args.prompt,
        reference_images=tuple(args.reference or ()),
        **given(args, negative_prompt="negative", backend="backend", preset="preset", ip_scale="ip_scale", frames="frames",
                fps="fps", steps="steps", guidance="guidance", seed="seed", scheduler="scheduler", strength="strength",
                structure_start="structure_start", structure_end="structure_end", memory_mode="memory_mode",
                context_length="context_length", context_stride="context_stride"),
        **({"width": args.size[0], "height": args.size[1]} if args.size is not None else {}),
    )
    depth = _depth(args, spec.frames, (spec.width, spec.height))
    concepts = _concepts(args, spec.backend)
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
    # No defaults here: what is not given falls through to ShotSpec's own (shown in the help).
    p.add_argument("--prompt", required=True, help="what the shot shows; <name> uses a trained concept")
    p.add_argument("--negative", help="what to avoid (negative prompt)")
    p.add_argument("--depth", required=True, help="a depth folder (depth.npy + depth.json) or a video clip")
    p.add_argument("--clip-start", type=float, default=None, help="with a clip: start of the span in seconds")
    p.add_argument("--clip-end", type=float, default=None, help="with a clip: end of the span in seconds")
    p.add_argument("--backend", choices=BACKENDS, help=f"default {_D.backend}")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="standard (25 steps + CFG) or fast (AnimateDiff-Lightning, 4 steps, no CFG); "
                        "default: fast on a Hugging Face Space, else standard")
    p.add_argument("--ip-scale", type=float, default=None,
                   help="weight of instant (IP-Adapter) characters' photos in this shot, 0..2 (default: each concept's own)")
    p.add_argument("--strength", type=float, help=f"structure strength 0..2, how hard depth steers (default {_D.strength:g})")
    p.add_argument("--structure-start", type=float, help=f"fraction of denoising where depth starts guiding (default {_D.structure_start:g})")
    p.add_argument("--structure-end", type=float, help=f"fraction of denoising where depth stops guiding (default {_D.structure_end:g})")
    p.add_argument("--frames", type=int, default=None, help="frame count (default 16; VACE needs 4k+1, default 17)")
    p.add_argument("--fps", type=float, help=f"default {_D.fps:g}")
    p.add_argument("--seed", type=int, help=f"default {_D.seed}")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, 25 or 4; 30 VACE)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the preset's, 7.5 or 1 = off; 5 VACE)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help=f"default {_D.scheduler}")
    p.add_argument("--size", type=_size, help=f"WIDTHxHEIGHT (default {_D.width}x{_D.height})")
    p.add_argument("--memory-mode", choices=MEMORY_MODES, help=f"default {_D.memory_mode}")
    p.add_argument("--context-length", type=int, help=f"FreeNoise window for long AnimateDiff shots (default {_D.context_length})")
    p.add_argument("--context-stride", type=int, help=f"FreeNoise window stride (default {_D.context_stride})")
    p.add_argument("--reference", action="append", help="reference image of a character (VACE; repeatable)")
    p.add_argument("--out", default=None, help="folder under which the shot's own folder is made (default outputs/shots)")
    p.add_argument("--weights", default=None, help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")
