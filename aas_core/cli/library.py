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
            memory_budget=args.memory_budget,
            engine=args.engine,
            ray_address=args.ray_address,
            workers=args.workers,
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

    options = {"motion": args.motion, "caption_weight": args.caption_weight}
    hits = search(args.query, k=args.k, library=args.library, image=args.image, min_duration=args.min_duration, weights_root=args.weights,
                  **{k: v for k, v in options.items() if v is not None})
    lines = [f"{h.rank:>2}. {h.score:+.3f}  {h.path}  [{h.start:.2f}s - {h.end:.2f}s]  {h.motion_class or 'remote'}"
             f"{'  “' + h.caption + '”' if h.caption else ''}  thumb: {h.thumbnail}" for h in hits]
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


def _compact(args: argparse.Namespace) -> dict:
    from aas_core.library import compact

    info = compact(args.library, memory_budget=args.memory_budget)
    return {**info.__dict__, "_text": f"library: {info.library}: {info.index_type} index over {info.shots} shots"}


def _import_captions(args: argparse.Namespace) -> dict:
    from aas_core.library import import_captions

    result = import_captions(args.file, args.library)
    lines = [f"library: {result['library']}: {result['added']} captions added, {result['captions']} in all"]
    lines += [f"bad row skipped: {b}" for b in result["bad"]]
    return {**result, "_text": "\n".join(lines)}


def _list(args: argparse.Namespace) -> dict:
    from aas_core.library import list_shots

    shots = list_shots(args.library, limit=args.limit)
    lines = [f"{s['path']}  [{s['start']:.2f}s - {s['end']:.2f}s]  {s['width']}x{s['height']}" for s in shots]
    return {"shots": shots, "_text": "\n".join(lines) or "the library is empty"}


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `library` group."""
    from aas_core.library import CLIP_MODELS, ENGINES, MOTION_CLASSES

    group = sub.add_parser("library", help="clip library: index, search, compact, import-captions, info, list").add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--library", help="library folder (default: $AAS_LIBRARY or ./library)")
        p.add_argument("--weights", help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")

    p = add_command(group, "index", _index, "index (or update) a folder of clips: new and changed files only")
    p.add_argument("folder", help="folder scanned recursively for videos")
    p.add_argument("--model", choices=CLIP_MODELS, help="CLIP embedder (default: the library's, else clip-vit-b-32)")
    p.add_argument("--sample-fps", type=float, help="frames embedded per second of video (default 2)")
    p.add_argument("--max-shot", type=float, help="longest shot in seconds; longer ones are split (default 8)")
    p.add_argument("--reindex", action="store_true", help="drop all vectors and index everything again")
    p.add_argument("--memory-budget", help="memory the vector index may plan for, e.g. 8GB (default: a third of RAM)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="local: in this process; ray: a Ray Data pipeline")
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, help="embedder actors for --engine ray (default: 1 per GPU, else 1)")
    common(p)
    p = add_command(group, "search", _search, "find shots by what happens in them (or by an example image)")
    p.add_argument("query", nargs="?", help='e.g. "a man walks a dog in a park"')
    p.add_argument("--image", help="search by an example image instead of text")
    p.add_argument("--k", type=int, default=5, help="number of hits")
    p.add_argument("--min-duration", type=float, default=0.0, help="only shots at least this long (seconds)")
    p.add_argument("--motion", choices=MOTION_CLASSES, help="only shots that move this much")
    p.add_argument("--caption-weight", type=float, help="weight of caption word matches against CLIP similarity (default 1; 0 = CLIP only)")
    common(p)
    p = add_command(group, "compact", _compact, "retrain the vector index (after much growth or many removals)")
    p.add_argument("--memory-budget", help="memory the vector index may plan for, e.g. 8GB (default: a third of RAM)")
    common(p)
    p = add_command(group, "import-captions", _import_captions, "add captions from a .csv/.parquet of (path or URL, caption, start, end)")
    p.add_argument("file", help="WebVid/Panda-style metadata: columns path|url, caption|name, optional start, end")
    common(p)
    p = add_command(group, "info", _info, "counts, model, index type and skipped files")
    common(p)
    p = add_command(group, "list", _list, "every indexed shot")
    p.add_argument("--limit", type=int, help="at most this many")
    common(p)
