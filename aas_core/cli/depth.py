"""`depth CLIP`: depth frames, previews and params.json for one clip span."""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path
from typing import Any

from aas_core.cli import add_command, given
from aas_core.depth.clip import FIT_MODES, parse_size
from aas_core.depth.estimators import ESTIMATORS
from aas_core.depth.pipeline import depth_from_clip
from aas_core.depth.stabilize import NORMALIZE_MODES
from aas_core.depth.video import META_FILE
from aas_core.errors import InputError

PARAMS_FILE = "params.json"
_DEFAULTS = {name: p.default for name, p in inspect.signature(depth_from_clip).parameters.items()}
"""depth_from_clip's own defaults, for the help text."""


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_FILE).is_file())):
            raise InputError(f"{out} exists and is not an earlier depth output; choose another --out (nothing was written)")
        return out
    return Path("outputs") / "depth" / f"{Path(args.clip).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _size(args: argparse.Namespace) -> dict[str, Any]:
    return {"size": parse_size(args.size)} if args.size is not None else {}


def _run(args: argparse.Namespace) -> dict:
    from aas_core.depth import write_previews
    from aas_core.device import pick_runtime
    from aas_core.fsutil import atomic_dir, atomic_write_json, check_writable
    from aas_core.progress import tqdm_progress
    from aas_core.weights import weights_dir

    out = _out_dir(args)
    check_writable(out.parent)  # before the estimator runs, not after
    runtime = pick_runtime()  # the top-level --device/--dtype land in $AAS_DEVICE/$AAS_DTYPE
    progress, close = tqdm_progress("depth", disable=args.json)
    try:
        depth = depth_from_clip(
            args.clip,
            start=args.start,
            end=args.end,
            weights_root=args.weights,
            runtime=runtime,
            cache_dir=args.cache_dir,
            on_progress=progress,
            use_cache=not args.no_cache,
            **given(args, frames="frames", speed="speed", fit="fit", estimator="estimator", smoothing="smoothing",
                    normalize_mode="normalize"),
            **_size(args),
        )
    finally:
        close()
    params = {
        "command": "depth",
        "clip": str(Path(args.clip).absolute()),
        "span": list(depth.span),
        "estimator": depth.estimator,
        "settings": depth.settings,
        "stats": depth.stats,
        "warnings": depth.warnings,
        "weights_dir": str(weights_dir(args.weights)),
        "seed": None,  # the pipeline is deterministic: no randomness to seed
    }
    with atomic_dir(out, overwrite=True) as tmp:
        depth.save(tmp)
        previews = write_previews(depth, tmp)
        atomic_write_json(tmp / PARAMS_FILE, params)
    files = {name: str(out / path.name) for name, path in previews.items()}
    tiny = depth.settings["weights"]["tiny"]
    lines = [
        f"depth: {depth.num_frames} frames {depth.size[0]}x{depth.size[1]} at {depth.fps:.3g} fps from "
        f"{depth.span[0]:.2f}-{depth.span[1]:.2f}s with {depth.estimator}"
        + (" (tiny random weights: preview only)" if tiny else "")
        + (" [cache]" if depth.stats.get("cache_hit") else ""),
        f"flicker {depth.stats['flicker']:.4f} (relative {depth.stats['relative_flicker']:.3f}; per-frame min/max "
        f"would be {depth.stats['baseline_per_frame_minmax']['relative_flicker']:.3f})",
        *(f"warning: {w}" for w in depth.warnings),
        f"written: {out}",
    ]
    return {
        "out": str(out),
        "params": str(out / PARAMS_FILE),
        "files": files,
        "num_frames": depth.num_frames,
        "size": list(depth.size),
        "fps": depth.fps,
        "span": list(depth.span),
        "estimator": depth.estimator,
        "tiny": tiny,
        "stats": {k: v for k, v in depth.stats.items() if k != "source_times"},
        "warnings": depth.warnings,
        "_text": "\n".join(lines),
    }


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `depth` command."""
    p = add_command(sub, "depth", _run, "a clip span's depth sequence (stable scale), previews and params.json")
    p.add_argument("clip", help="video file (mp4, mov, mkv, ...)")
    p.add_argument("--start", type=float, help="span start in seconds (default: clip start)")
    p.add_argument("--end", type=float, help="span end in seconds (default: clip end)")
    # No defaults here: what is not given falls through to depth_from_clip's own (shown in the help).
    p.add_argument("--frames", type=int, help=f"frames in the shot (default {_DEFAULTS['frames']})")
    p.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default {}x{})".format(*_DEFAULTS["size"]))
    p.add_argument("--estimator", choices=ESTIMATORS, help=f"default {_DEFAULTS['estimator']}")
    p.add_argument("--speed", type=float, help=f"motion speed factor: 2 covers twice the footage (default {_DEFAULTS['speed']:g})")
    p.add_argument("--fit", choices=FIT_MODES, help=f"centre-crop or pad to the size (default {_DEFAULTS['fit']})")
    p.add_argument("--smoothing", type=float, help=f"temporal sigma in frames, 0 = off (default {_DEFAULTS['smoothing']:g})")
    p.add_argument("--normalize", choices=NORMALIZE_MODES, help=f"{_DEFAULTS['normalize_mode']} (default): one scale for the clip; aligned: remove per-frame scale drift first; per-frame: min/max baseline")
    p.add_argument("--out", help="output folder (default outputs/depth/<clip>-<time>)")
    p.add_argument("--weights", help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")
    p.add_argument("--cache-dir", help="depth cache (default: $AAS_CACHE_DIR/depth or <weights>/.cache/depth)")
    p.add_argument("--no-cache", action="store_true", help="compute again and do not store the result")
