"""`story` commands: new (plan from text), check, run (resumable), stitch, report, export."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from aas_core.cli import add_command
from aas_core.errors import InputError
from aas_core.story.export import EXPORT_FORMATS
from aas_core.story.planner import API_KEY_ENV, DEFAULT_PLANNER, DEFAULT_PLANNER_MODEL, DEFAULT_TIMEOUT, PLANNERS


def _new(args: argparse.Namespace) -> dict:
    from aas_core.story import dump_story
    from aas_core.story.planner import plan_from_text, save_plan

    text = sys.stdin.read() if args.text == "-" else args.text
    if args.text != "-" and Path(args.text).is_file():
        text = Path(args.text).read_text(encoding="utf-8")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out} already exists; choose another --out or pass --force to replace it")
    # An endpoint given without --planner means the language-model planner.
    planner = args.planner or ("llm" if args.planner_url else DEFAULT_PLANNER)
    result = plan_from_text(
        text, planner=planner, shots=args.shots, title=args.title or "", characters=args.character or (),
        url=args.planner_url, model=args.planner_model, api_key_env=args.planner_key_env, timeout=args.planner_timeout,
        weights_root=args.weights, runtime=_runtime(args) if planner == "llm" and not args.planner_url else None,
    )
    story_file, record = save_plan(result, out, text)
    story = result.story
    return {
        "path": str(story_file),
        "plan": str(record),
        "planner": result.planner,
        "used": result.used,
        "warnings": result.warnings,
        "shots": [{"id": s.id, "query": s.query, "prompt": s.prompt, "caption": s.caption, "transition": s.transition,
                   "frames": s.generate.frames if s.generate else None} for s in story.shots],
        "characters": [c.name for c in story.characters],
        "_text": dump_story(story) + "".join(f"\nwarning: {w}" for w in result.warnings)
        + f"\nwrote {out} ({len(story.shots)} shots, planner: {result.used}; record: {record.name}); "
        f"edit it, then: python -m aas_core story run {out}",
    }


def _runtime(args: argparse.Namespace):
    from aas_core.device import pick_runtime

    return pick_runtime(getattr(args, "device", None), getattr(args, "dtype", None))


def _check(args: argparse.Namespace) -> dict:
    from aas_core.story import default_out_dir, load_story, plan_story

    story = load_story(args.file)
    out = Path(args.out) if args.out else default_out_dir(args.file)
    plan = plan_story(story, out, Path(args.file).absolute().parent, args.weights, args.library, _runtime(args))
    shots = [{"id": p.id, "clip": p.clip.path, "start": p.clip.start, "end": p.clip.end, "key": p.key,
              "retrieved": p.retrieval is not None, "seed": p.spec["seed"], "choice": (p.retrieval or {}).get("choice")}
             for p in plan.shots]
    lines = [f"{s['id']}: {Path(s['clip']).name} {s['start']:.2f}-{s['end'] if s['end'] is not None else 'end'}"
             f"{' (retrieved)' if s['retrieved'] else ''} seed {s['seed']}"
             + "".join(f"\n    {reason}" for reason in (s["choice"] or {}).get("reasons", [])) for s in shots]
    return {"shots": shots, "_text": "\n".join(lines + [f"story OK: {len(shots)} shots ready to run"])}


def _summary(run) -> dict:
    lines = [f"{s.id:<16} {s.status:<9} {s.error or ''}" for s in run.shots]
    lines.append(f"video: {run.video or 'none (no finished shot)'} ({run.duration:.2f} s)")
    lines.append(f"report: {run.report_md}")
    return {**run.to_dict(), "_text": "\n".join(lines)}


def _run(args: argparse.Namespace) -> dict:
    from aas_core.progress import tqdm_progress
    from aas_core.story import run_story

    only = [s for part in (args.only or []) for s in part.split(",") if s]
    progress, close = tqdm_progress("story", disable=args.json)
    try:
        run = run_story(args.file, out_dir=args.out, only=only or None, weights_root=args.weights, library=args.library,
                        metrics=not args.no_metrics, runtime=_runtime(args), on_progress=progress)
    finally:
        close()
    result = _summary(run)
    if run.failed:
        result["_text"] += f"\n{len(run.failed)} shot(s) failed; fix them and run again (finished shots are kept)"
    return result


def _stitch(args: argparse.Namespace) -> dict:
    from aas_core.progress import tqdm_progress
    from aas_core.story import assemble, assemble_takes

    progress, close = tqdm_progress("stitch", disable=args.json)
    try:
        if args.takes:
            return _summary(assemble_takes(args.dir, **_takes_file(args.takes), on_progress=progress))
        return _summary(assemble(args.dir, on_progress=progress))
    finally:
        close()


TAKES_FILE_HELP = ('a JSON file: {"title": ..., "fps": ..., "output": {"title_card": ..., "captions": ..., "music": ...}, '
                   '"takes": [{"shot": ID, "video": FILE, "number": N, "caption": ..., "transition": ..., '
                   '"transition_duration": ...}]} (or just the list of takes); paths relative to the file')


def _takes_file(path: str) -> dict:
    """`assemble_takes` keyword arguments from a takes file (TAKES_FILE_HELP); its paths are relative to the file."""
    import json

    from aas_core.story import Output, Take

    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read takes file {path} ({exc}); write {TAKES_FILE_HELP}") from None
    data = {"takes": data} if isinstance(data, list) else data
    if not isinstance(data, dict) or not isinstance(data.get("takes"), list) or set(data) - {"title", "fps", "output", "takes"}:
        raise InputError(f"takes file {path}: write {TAKES_FILE_HELP}")
    takes = []
    for i, raw in enumerate(data["takes"]):
        try:
            take = Take(**raw)
        except TypeError:
            fields = ", ".join(f.name for f in dataclasses.fields(Take))
            raise InputError(f"takes file {path}: take {i + 1} must be an object with shot and video (fields: {fields})") from None
        take.video = str(file.parent / take.video) if isinstance(take.video, str) and take.video else take.video
        takes.append(take)
    try:
        output = Output(**(data.get("output") or {}))
    except (TypeError, ValueError) as exc:
        raise InputError(f"takes file {path}: output: {exc}") from None
    if isinstance(output.music, str) and output.music:
        output.music = str(file.parent / output.music)
    return {"takes": takes, "title": str(data.get("title") or ""), "output": output, "fps": data.get("fps")}


def _report(args: argparse.Namespace) -> dict:
    from aas_core.story import assemble

    run = assemble(args.dir)
    return {**_summary(run), "_text": Path(run.report_md).read_text(encoding="utf-8")}


def _export(args: argparse.Namespace) -> dict:
    from aas_core.story.export import export_run

    result = export_run(args.dir, args.format, args.out)
    lines = [f"wrote {result.path} ({result.format}, {result.shots} shots, {result.duration:.2f} s at {result.rate} fps)"]
    lines += [f"captions: {result.srt}"] if result.srt else []
    lines += [f"warning: {w}" for w in result.warnings]
    return {**dataclasses.asdict(result), "_text": "\n".join(lines)}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights folder (default: $AAS_WEIGHTS_DIR or ./weights)")
    p.add_argument("--library", help="clip library folder for `clip: auto` shots (default: the story's `library:` or the default library)")


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the `story` group."""
    group = sub.add_parser("story", help="stories: draft, run (resumable), stitch, report").add_subparsers(dest="command", required=True)
    p = add_command(group, "new", _new, "plan a story file from text: one shot per sentence, or with a language model (--planner llm)")
    p.add_argument("text", help="the story text, a text file, or - for stdin")
    p.add_argument("--out", required=True, help="story file to write (YAML)")
    p.add_argument("--title", help="story title (shown on the title card)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--planner", choices=PLANNERS,
                   help="sentences (default; llm when --planner-url is given): one shot per line/sentence; "
                        "llm: a language model writes query, prompt, caption, duration, transition")
    p.add_argument("--shots", type=int, help="number of shots to plan (default: the planner decides)")
    p.add_argument("--character", action="append", metavar="NAME", help="a story character, written <NAME> in prompts (repeatable; <name> tokens in the text count too)")
    p.add_argument("--planner-url", help="OpenAI-compatible endpoint for --planner llm, e.g. http://localhost:8000/v1 (default: the local model)")
    p.add_argument("--planner-model", help=f"model name at the endpoint, or the registry model for local planning (default: {DEFAULT_PLANNER_MODEL})")
    p.add_argument("--planner-key-env", default=API_KEY_ENV, help=f"environment variable holding the endpoint's API key (default: {API_KEY_ENV})")
    p.add_argument("--planner-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the endpoint")
    p.add_argument("--weights", help="weights folder for the local planner model (default: $AAS_WEIGHTS_DIR or ./weights)")
    p = add_command(group, "check", _check, "validate a story and choose its clips without generating anything")
    p.add_argument("file", help="story file (YAML or JSON)")
    p.add_argument("--out", help="run folder (default: <story>-run next to the file)")
    _common(p)
    p = add_command(group, "run", _run, "run a story: retrieve, depth, generate each shot (resumable), stitch, report")
    p.add_argument("file", help="story file (YAML or JSON)")
    p.add_argument("--out", help="run folder (default: <story>-run next to the file)")
    p.add_argument("--only", action="append", metavar="SHOT_IDS", help="run only these shots (comma-separated; repeatable)")
    p.add_argument("--no-metrics", action="store_true", help="skip the quality metrics")
    _common(p)
    p = add_command(group, "stitch", _stitch, "stitch the finished shots of a run folder again, or chosen takes into it (video, storyboard, report)")
    p.add_argument("dir", help="run folder (with --takes: the folder to stitch into; its run.json then lists exactly those takes)")
    p.add_argument("--takes", metavar="FILE", help=f"stitch these takes instead of the run's shots: {TAKES_FILE_HELP}")
    p = add_command(group, "report", _report, "print (and rewrite) the report of a run folder")
    p.add_argument("dir", help="run folder")
    p = add_command(group, "export", _export, "export a run's timeline to an editor (OpenTimelineIO, Final Cut Pro XML, EDL) and story.srt")
    p.add_argument("dir", help="run folder")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="otio", help="otio (Resolve, Kdenlive via OTIO), fcpxml (Final Cut, Resolve), edl (any editor; no music)")
    p.add_argument("--out", help="file to write (default: RUN_DIR/story.<format>)")
