"""`concept` commands: train a character from photos, list, show, delete, export/import TI and LoRA files."""

from __future__ import annotations

import argparse
import signal
import warnings

from aas_core.cli import add_command, given
from aas_core.concepts.ip_adapter import DEFAULT_IP_SCALE, DEFAULT_IP_VARIANT, IP_VARIANTS
from aas_core.concepts.store import CONCEPT_METHODS
from aas_core.concepts.train import TrainSettings


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights folder holding concepts/ (default: $AAS_WEIGHTS_DIR or ./weights)")


def _train(args: argparse.Namespace) -> dict:
    from aas_core.concepts import TrainSettings, parse_photo_arg, train_concept
    from aas_core.concepts.store import check_free
    from aas_core.device import pick_runtime
    from aas_core.progress import CancelToken, tqdm_progress

    check_free(args.name, args.weights, args.overwrite)  # before any progress bar or model load
    if args.method == "ip-adapter":
        return _instant(args)
    settings = TrainSettings(
        lora=args.lora, gradient_checkpointing=args.gradient_checkpointing,
        **given(args, steps="steps", buckets="buckets", vectors="vectors", lr="lr", batch_size="batch_size",
                resolution="resolution", lora_rank="lora_rank", validate_every="validate_every",
                checkpoint_every="checkpoint_every", seed="seed"),
    )
    cancel = CancelToken()
    # Ctrl-C stops at the next step with a checkpoint saved, so the same command resumes.
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    progress, close = tqdm_progress(f"concept {args.name}", disable=args.json)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train_concept(
                args.name, args.class_word, [parse_photo_arg(p) for p in args.photos], settings, root=args.weights,
                overwrite=args.overwrite, runtime=pick_runtime(), on_progress=progress, cancel=cancel,
                method=args.method, ip_scale=args.ip_scale, ip_variant=args.ip_variant,
            )
    finally:
        close()
        signal.signal(signal.SIGINT, previous)
    concept = result.concept
    notes = [str(w.message) for w in caught]
    text = [f"warning: {n}" for n in notes] + [
        f"trained {concept.token} ({concept.buckets} buckets x {concept.vectors} vectors"
        f"{', LoRA' if concept.lora else ''}{', + IP-Adapter photos' if concept.uses_ip else ''}) in {concept.folder}",
        f"loss: first {result.losses[0]:.4f}, last {result.losses[-1]:.4f}" if result.losses else "no steps run",
        f"use it by writing {concept.token} in a shot prompt, e.g. \"{concept.token} walks along the beach\"",
    ]
    if concept.tiny:
        text.append("tiny base model: this concept is a workflow preview only")
    return {"concept": concept.summary(), "losses": result.losses, "resumed_from": result.resumed_from,
            "warnings": notes, "_text": "\n".join(text)}


def _instant(args: argparse.Namespace) -> dict:
    """`--method ip-adapter`: photos and their IP-Adapter embeddings, no training."""
    from aas_core.concepts import parse_photo_arg
    from aas_core.concepts.ip_adapter import make_ip_concept
    from aas_core.device import pick_runtime

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        concept = make_ip_concept(
            args.name, args.class_word, [parse_photo_arg(p) for p in args.photos], ip_scale=args.ip_scale,
            variant=args.ip_variant, root=args.weights, overwrite=args.overwrite, runtime=pick_runtime(),
        )
    notes = [str(w.message) for w in caught]
    text = [f"warning: {n}" for n in notes] + [
        f"made {concept.token} from {len(concept.photos)} photo{'' if len(concept.photos) == 1 else 's'} (IP-Adapter {concept.ip_variant}, scale {concept.ip_scale}) "
        f"in {concept.folder}: no training",
        f"use it by writing {concept.token} in a shot prompt, e.g. \"{concept.token} walks along the beach\"",
    ]
    if concept.tiny:
        text.append("tiny IP-Adapter: this concept is a workflow preview only")
    return {"concept": concept.summary(), "losses": [], "resumed_from": 0, "warnings": notes, "_text": "\n".join(text)}


def _list(args: argparse.Namespace) -> dict:
    from aas_core.concepts import concepts_dir, list_concepts

    concepts = list_concepts(args.weights)
    lines = [f"{'token':<24} {'class':<12} {'method':<11} {'K x n':<7} {'lora':<5} {'source':<14} base"]
    for c in concepts:
        vectors = f"{c.buckets}x{c.vectors}" if c.has_table else "-"
        lines.append(f"{c.token:<24} {c.class_word:<12} {c.method:<11} {vectors:<7} {'yes' if c.lora else '-':<5} "
                     f"{c.source:<14} {c.base_model}{' (tiny)' if c.tiny else ''}")
    if not concepts:
        lines = [f"no concepts yet in {concepts_dir(args.weights)}; make one with: python -m aas_core concept train --name NAME --class-word WORD PHOTOS..."]
    return {"concepts": [c.summary() for c in concepts], "_text": "\n".join(lines)}


def _show(args: argparse.Namespace) -> dict:
    import json

    from aas_core.concepts import load_concept

    concept = load_concept(args.name, args.weights)
    summary = concept.summary()
    return {"concept": summary, "_text": json.dumps(summary, indent=2, default=str)}


def _delete(args: argparse.Namespace) -> dict:
    from aas_core.concepts import delete_concept

    path = delete_concept(args.name, args.weights)
    return {"deleted": str(path), "_text": f"deleted {path}"}


def _export(args: argparse.Namespace) -> dict:
    from aas_core.concepts import export_textual_inversion, load_concept

    out = export_textual_inversion(load_concept(args.name, args.weights), args.out)
    return {"exported": str(out), "_text": f"wrote {out} (mean of the timestep buckets; loads as a plain textual inversion)"}


def _import_ti(args: argparse.Namespace) -> dict:
    from aas_core.concepts import import_textual_inversion

    c = import_textual_inversion(args.file, args.name, args.class_word, root=args.weights, overwrite=args.overwrite)
    return {"concept": c.summary(), "_text": f"imported {args.file} as {c.token} ({c.vectors} vectors) in {c.folder}"}


def _import_lora(args: argparse.Namespace) -> dict:
    from aas_core.concepts import import_lora

    c = import_lora(args.file, args.name, args.trigger, args.class_word, root=args.weights, overwrite=args.overwrite)
    return {"concept": c.summary(), "_text": f"imported {args.file} as {c.token} (LoRA, trigger {args.trigger or args.class_word!r}) in {c.folder}"}


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `concept` group."""
    group = sub.add_parser("concept", help="characters learnt from photos (TimeInv)").add_subparsers(dest="command", required=True)
    p = add_command(
        group, "train", _train,
        "learn a character from 3-20 photos; then write <name> in prompts (device/dtype: the global --device/--dtype)",
    )
    p.add_argument("photos", nargs="+", help="jpg/png/webp photos; PHOTO@x0,y0,x1,y1 crops to a box around the character")
    p.add_argument("--name", required=True, help="concept name (lowercase, digits, - or _); the prompt token is <name>")
    p.add_argument("--class-word", required=True, help="what the character is (woman, cat, robot): the starting point")
    p.add_argument("--method", choices=CONCEPT_METHODS, default="timeinv",
                   help="ip-adapter: instant (seconds, photos steer each shot); timeinv: trained vectors (best identity, "
                        "minutes on a GPU); both: trained vectors plus the photos")
    p.add_argument("--ip-scale", type=float, default=DEFAULT_IP_SCALE,
                   help="ip-adapter/both: weight of the photos in shots, 0..2 (a shot can override it)")
    p.add_argument("--ip-variant", choices=IP_VARIANTS, default=DEFAULT_IP_VARIANT,
                   help="ip-adapter/both: IP-Adapter file (plus: best identity; plain: looser; plus-face: faces)")
    # No defaults here: what is not given falls through to TrainSettings' own (shown in the help).
    d = TrainSettings()
    p.add_argument("--steps", type=int, help=f"optimisation steps (default {d.steps})")
    p.add_argument("--buckets", type=int, help=f"K timestep buckets, each with its own vectors (default {d.buckets})")
    p.add_argument("--vectors", type=int, help=f"n token vectors per bucket (default {d.vectors})")
    p.add_argument("--lr", type=float, help=f"learning rate of the vectors (default {d.lr:g})")
    p.add_argument("--batch-size", type=int, help=f"photos per step (default {d.batch_size})")
    p.add_argument("--resolution", type=int, help="training side in px (default: the base model's, 512)")
    p.add_argument("--lora", action="store_true", help="also train a LoRA on the cross-attention key/value projections")
    p.add_argument("--lora-rank", type=int, help=f"LoRA rank (default {d.lora_rank})")
    p.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    p.add_argument("--validate-every", type=int, help=f"validation image every N steps, 0: never (default {d.validate_every})")
    p.add_argument("--checkpoint-every", type=int, help=f"resumable checkpoint every N steps (default {d.checkpoint_every})")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument("--overwrite", action="store_true", help="replace an existing concept of that name")
    _root_arg(p)
    p = add_command(group, "list", _list, "every concept in the weights folder")
    _root_arg(p)
    p = add_command(group, "show", _show, "one concept's settings, photos and files")
    p.add_argument("name")
    _root_arg(p)
    p = add_command(group, "delete", _delete, "delete a concept (and any unfinished training of it)")
    p.add_argument("name")
    _root_arg(p)
    p = add_command(group, "export", _export, "write a plain textual-inversion .safetensors (mean over buckets)")
    p.add_argument("name")
    p.add_argument("out", help="output .safetensors file")
    _root_arg(p)
    p = add_command(group, "import-ti", _import_ti, "make a concept from a standard SD1.5 textual-inversion file")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument("--class-word", default="")
    p.add_argument("--overwrite", action="store_true")
    _root_arg(p)
    p = add_command(group, "import-lora", _import_lora, "make a concept from an SD1.5 LoRA file (<name> = its trigger words)")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument("--trigger", default="", help="the LoRA's trigger words")
    p.add_argument("--class-word", default="")
    p.add_argument("--overwrite", action="store_true")
    _root_arg(p)
