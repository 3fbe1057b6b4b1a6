"""`library` commands: index a folder of clips, search it by text or image, show what it holds."""

from __future__ import annotations

import argparse

from aas_core.cli import add_command


def _settings(args: argparse.Namespace):
    """ReaderSettings from the flags given; unset flags keep the dataclass defaults (one place for them)."""
    from aas_core.library import ReaderSettings

    given = {"sample_fps": args.sample_fps, "max_shot_seconds": args.max_shot}
    return ReaderSettings(**{k: v for k, v in given.items() if v is not None})


def _index(args: argparse.Namespace) -> dict:
    from aas_core.library import index_folder
    from aas_core.progress import tqdm_progress

    progress, close = tqdm_progress("indexing", disable=args.json)
    try:
        summary = index_folder(
            args.folder,
            library=args.library,
            model=args.model,
            weights_root=args.weights,
            settings=_settings(args),
            reindex=args.reindex,
            on_progress=progress,
        )
    finally:
        close()
    lines = [
        f"library: {summary.library} ({summary.model}, {summary.index_type} index)",
        f"files seen {summary.files_seen}: indexed {summary.files_indexed}, unchanged {summary.files_reused}, "
        f"removed {summary.files_removed}; shots in library: {summary.shots}",
    ]
    lines += [f"skipped {s['path']}: {s['reason']}" for s in summary.skipped]
    return {**summary.__dict__, "_text": "\n".join(lines)}


def _search(args: argparse.Namespace) -> dict:
    from aas_core.library import search

    hits = search(args.query, k=args.k, library=args.library, image=args.image, min_duration=args.min_duration, weights_root=args.weights)
    lines = [f"{h.rank:>2}. {h.score:+.3f}  {h.path}  [{h.start:.2f}s - {h.end:.2f}s]  thumb: {h.thumbnail}" for h in hits]
    return {"hits": [h.to_dict() for h in hits], "_text": "\n".join(lines) or "no shot matched"}


def _info(args: argparse.Namespace) -> dict:
    from aas_core.library import library_info

    info = library_info(args.library)
    lines = [
        f"library: {info.library}",
        f"model: {info.model}{' (tiny random weights: preview only)' if info.tiny else ''}",
        f"index: {info.index_type}; files: {info.files}; shots: {info.shots}; built {info.created}",
        f"folders: {', '.join(info.roots)}",
        f"skipped files: {len(info.skipped)}",
    ]
    lines += [f"  {s['path']}: {s['reason']}" for s in info.skipped]
    return {**info.__dict__, "_text": "\n".join(lines)}


def _list(args: argparse.Namespace) -> dict:
    from aas_core.library import list_shots

    shots = list_shots(args.library)
    lines = [f"{s['path']}  [{s['start']:.2f}s - {s['end']:.2f}s]  {s['width']}x{s['height']}" for s in shots]
    return {"shots": shots, "_text": "\n".join(lines) or "the library is empty"}


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `library` group."""
    from aas_core.library import CLIP_MODELS

    group = sub.add_parser("library", help="clip library: index, search, info, list").add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--library", help="library folder (default: $AAS_LIBRARY or ./library)")
        p.add_argument("--weights", help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")

    p = add_command(group, "index", _index, "index (or update) a folder of clips: new and changed files only")
    p.add_argument("folder", help="folder scanned recursively for videos")
    p.add_argument("--model", choices=CLIP_MODELS, help="CLIP embedder (default: the library's, else clip-vit-b-32)")
    p.add_argument("--sample-fps", type=float, help="frames embedded per second of video (default 2)")
    p.add_argument("--max-shot", type=float, help="longest shot in seconds; longer ones are split (default 8)")
    p.add_argument("--reindex", action="store_true", help="drop all vectors and index everything again")
    common(p)
    p = add_command(group, "search", _search, "find shots by what happens in them (or by an example image)")
    p.add_argument("query", nargs="?", help='e.g. "a man walks a dog in a park"')
    p.add_argument("--image", help="search by an example image instead of text")
    p.add_argument("--k", type=int, default=5, help="number of hits")
    p.add_argument("--min-duration", type=float, default=0.0, help="only shots at least this long (seconds)")
    common(p)
    p = add_command(group, "info", _info, "counts, model, index type and skipped files")
    common(p)
    p = add_command(group, "list", _list, "every indexed shot")
    common(p)
