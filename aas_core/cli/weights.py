"""`weights` commands: list, download from the Hub, write tiny random stand-ins."""

from __future__ import annotations

import argparse

from aas_core import weights
from aas_core.cli import add_command
from aas_core.registry import REGISTRY

VARIANTS: tuple[str, ...] = tuple(sorted({v for spec in REGISTRY.values() for v in spec.variants}))


def _list(args: argparse.Namespace) -> dict:
    rows = weights.list_all(args.weights)
    lines = [f"{'name':<28} {'kind':<10} {'size':>7}  {'state':<8} {'license':<22} hub id"]
    for r in rows:
        state = "tiny" if r["tiny"] else ("present" if r["present"] else "missing")
        lines.append(f"{r['name']:<28} {r['kind']:<10} {r['size_mb']:>5}MB  {state:<8} {r['license']:<22} {r['hub_id']}")
    lines.append(f"weights folder: {weights.weights_dir(args.weights)}")
    return {"models": rows, "weights_dir": str(weights.weights_dir(args.weights)), "_text": "\n".join(lines)}


def _download(args: argparse.Namespace) -> dict:
    names = args.names or list(REGISTRY)
    paths = weights.download(names, args.weights, force=args.force, variant=args.variant)
    return {"downloaded": [str(p) for p in paths], "_text": "\n".join(f"ready: {p}" for p in paths)}


def _tiny(args: argparse.Namespace) -> dict:
    names = args.names or list(REGISTRY)
    paths = weights.write_tiny(names, args.weights)
    return {
        "written": [str(p) for p in paths],
        "_text": "\n".join(f"tiny (random weights, preview only): {p}" for p in paths),
    }


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `weights` group."""
    group = sub.add_parser("weights", help="model weights: list, download, tiny").add_subparsers(dest="command", required=True)
    p = add_command(group, "list", _list, "every model the product uses and whether it is present")
    p.add_argument("--weights", help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")
    p = add_command(group, "download", _download, "fetch models from the Hugging Face Hub into the weights folder")
    p.add_argument("names", nargs="*", help=f"model names (default: all): {', '.join(REGISTRY)}")
    p.add_argument("--weights", help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.add_argument("--variant", choices=VARIANTS, help="fp16: half-size files where the repo has them (for GPUs; default: full precision)")
    p = add_command(group, "tiny", _tiny, "write tiny random-weight models in the real layout (tests, previews)")
    p.add_argument("names", nargs="*", help="model names (default: all)")
    p.add_argument("--weights", required=True, help="folder to write into (keep it apart from real weights)")
