"""Run a story: plan (every check, no GPU) -> per shot retrieve, depth, generate (each cached) -> stitch -> report.

Run folder layout (`OUT/`):
  story.yaml                    the resolved story (clips chosen, seeds and ids filled, absolute paths)
  run.json                      status of every shot; `story stitch` / `story report` read it
  cache/retrieval/KEY.json      retrieval results; cache/depth/KEY/: depth sequences
  shots/ID/KEY/                 one finished shot: generate's folder (params.json, shot.mp4, frames/),
                                comparison.mp4, done.json (written last), metrics.json
  story.mp4, storyboard.png, story_report.{json,md,html}
KEY digests every setting that changes the result, so an interrupted run resumes where it stopped,
and editing one shot's prompt regenerates only that shot.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence

import numpy as np

from aas_core.errors import AASError, Cancelled, InputError
from aas_core.fsutil import atomic_write_json, file_digest, json_digest
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.registry import DEFAULT_CLIP
from aas_core.story.schema import TOKEN, ClipRef, Shot, Story, load_story, save_story

if TYPE_CHECKING:
    from aas_core.device import Runtime

CACHE_VERSION = 1
"""Bump when a stage's output changes for the same settings, so old cache entries stop matching."""
RUN_FILE = "run.json"
DONE_FILE = "done.json"
METRICS_FILE = "metrics.json"
COMPARISON_FILE = "comparison.mp4"
VIDEO_NAME = "story.mp4"
STORYBOARD_NAME = "storyboard.png"
REPORT_JSON, REPORT_MD, REPORT_HTML = "story_report.json", "story_report.md", "story_report.html"
STORYBOARD_FRAMES = 4

ShotStatus = Literal["generated", "cached", "failed", "skipped"]
SHOT_STATUSES: tuple[str, ...] = ("generated", "cached", "failed", "skipped")


@dataclass
class ShotPlan:
    """Everything one shot needs, resolved and checked before any model runs."""

    shot: Shot
    index: int
    spec: dict[str, Any]
    """ShotSpec keyword arguments (prompt with concept tokens, seed, size, frames...)."""
    clip: ClipRef
    """Absolute path and span of the motion source."""
    retrieval: Optional[dict[str, Any]]
    """The search hit when the clip was chosen automatically."""
    depth: dict[str, Any]
    """depth_from_clip keyword arguments (estimator, frames, size, options)."""
    concepts: list[str]
    caption: str
    transition: str
    transition_duration: float
    key: str

    @property
    def id(self) -> str:
        """The shot id."""
        return self.shot.id


@dataclass
class StoryPlan:
    """A validated story, ready to run."""

    story: Story
    shots: list[ShotPlan]
    out_dir: Path
    fps: float
    weights_root: Optional[str]


@dataclass
class ShotOutcome:
    """What happened to one shot in a run."""

    id: str
    status: ShotStatus
    key: str = ""
    folder: str = ""
    video: str = ""
    comparison: str = ""
    frames: int = 0
    fps: float = 0.0
    seconds: float = 0.0
    error: str = ""
    metrics: Optional[dict[str, Any]] = None
    prompt: str = ""
    caption: str = ""
    transition: str = "cut"
    transition_duration: float = 0.0
    clip: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False


@dataclass
class StoryRun:
    """The result of `run_story`: per-shot outcomes and the assembled files."""

    out_dir: str
    shots: list[ShotOutcome]
    video: Optional[str] = None
    duration: float = 0.0
    storyboard: Optional[str] = None
    report_json: Optional[str] = None
    report_md: Optional[str] = None
    report_html: Optional[str] = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[ShotOutcome]:
        """Shots that failed."""
        return [s for s in self.shots if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def default_out_dir(story_path: str | os.PathLike[str]) -> Path:
    """`<story folder>/<story name>-run`."""
    path = Path(story_path).absolute()
    return path.parent / f"{path.stem}-run"


def _resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p)


def _merged_generate(story: Story, shot: Shot) -> dict[str, Any]:
    """ShotSpec keyword arguments: story defaults, then the shot's overrides (None = engine default)."""
    out: dict[str, Any] = {}
    for settings in (story.defaults.generate, shot.generate):
        if settings is None:
            continue
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if f.name == "options":
                out.update(value)
            elif value is not None:
                out[f.name] = value
    return out


def _seed(story: Story, shot: Shot) -> int:
    # Derived from the id, not the position: inserting a shot must not reseed (and regenerate) the rest.
    return shot.seed if shot.seed is not None else story.defaults.seed + zlib.crc32(shot.id.encode()) % 100_000


def _concept_prompt(prompt: str, aliases: dict[str, str]) -> str:
    """Story character tokens `<alias>` -> the concept's own token `<concept>`."""
    return TOKEN.sub(lambda m: f"<{aliases.get(m.group(1), m.group(1))}>", prompt)


def _error_at(shot: Shot, index: int, message: str) -> str:
    return f"shot {index + 1} ({shot.id}): {message}"


def _check_depth_options(options: dict[str, Any]) -> None:
    from aas_core.depth import depth_from_clip

    allowed = set(inspect.signature(depth_from_clip).parameters) - {
        "path", "start", "end", "frames", "size", "estimator", "weights_root", "runtime", "cache_dir", "on_progress", "cancel",
    }
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown depth option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _weights_identity(names: Sequence[str], weights_root: Optional[str]) -> dict[str, Any]:
    """Which weights a result depends on (present and tiny or real), failing early if one is missing."""
    from aas_core.weights import is_tiny, model_dir

    for name in names:
        model_dir(name, weights_root)
    return {name: {"tiny": is_tiny(name, weights_root)} for name in names}


def _retrieve(
    story: Story, shot: Shot, library: Optional[str], out_dir: Path, weights_root: Optional[str], runtime: Optional["Runtime"]
) -> Optional[dict[str, Any]]:
    """The top search hit for the shot's query, cached in the run folder per library state."""
    from aas_core import library as lib
    from aas_core.metrics import clip_text

    query = shot.query or clip_text(shot.prompt)
    info = lib.library_info(library)
    key = json_digest({"v": CACHE_VERSION, "q": query, "lib": info.library, "created": info.created, "min": story.defaults.min_clip_duration})
    cached = out_dir / "cache" / "retrieval" / f"{key}.json"
    data = _read_json(cached)
    if data is not None:
        return data or None
    hits = lib.search(query, k=1, library=library, min_duration=story.defaults.min_clip_duration, weights_root=weights_root, runtime=runtime)
    hit = {**hits[0].to_dict(), "query": query} if hits else {}
    atomic_write_json(cached, hit)
    return hit or None


def plan_story(
    story: Story,
    out_dir: str | os.PathLike[str],
    base_dir: str | os.PathLike[str] = ".",
    weights_root: Optional[str | os.PathLike[str]] = None,
    library: Optional[str | os.PathLike[str]] = None,
    runtime: Optional["Runtime"] = None,
    on_progress: Optional[ProgressFn] = None,
) -> StoryPlan:
    """Check everything (files, concepts, settings, weights, retrieval) and fix every shot's cache key.

    All problems of all shots are gathered into one InputError; nothing heavy (depth, generation) runs.
    """
    from aas_core.concepts.store import META_FILE as CONCEPT_META, TABLE_FILE, load_concept
    from aas_core.depth import DEFAULT_ESTIMATOR
    from aas_core.depth.estimators import check_estimator
    from aas_core.depth.pipeline import source_digest
    from aas_core.generate import ShotSpec
    from aas_core.generate.pipelines import BACKEND_MODELS
    from aas_core.metrics import clip_text
    from aas_core.video_io import probe

    base = Path(base_dir).absolute()
    out = Path(out_dir).absolute()
    root = str(weights_root) if weights_root is not None else None
    problems: list[str] = []

    aliases, concept_ids = {}, {}
    for ch in story.characters:
        aliases[ch.name] = ch.concept_name
        try:
            concept = load_concept(ch.concept_name, root)
            folder = concept.folder or Path()
            concept_ids[ch.concept_name] = {
                "meta": file_digest(folder / CONCEPT_META),
                "table": file_digest(folder / TABLE_FILE) if (folder / TABLE_FILE).is_file() else "",
            }
        except InputError as exc:
            problems.append(f"character {ch.name}: {exc}")

    music = None
    if story.output.music:
        music_path = _resolve(base, story.output.music)
        if not music_path.is_file():
            problems.append(f"output.music: {music_path} does not exist; check the path (relative paths start at the story file)")
        music = str(music_path)
    lib_path = str(_resolve(base, story.library)) if story.library else (str(library) if library else None)

    staged = []
    for i, shot in enumerate(story.shots):
        try:
            kwargs = _merged_generate(story, shot)
            kwargs.update(prompt=_concept_prompt(shot.prompt, aliases), seed=_seed(story, shot))
            try:
                spec = ShotSpec(**kwargs)
            except TypeError as exc:
                raise InputError(f"generate.options: {exc}; see the generation settings in the README") from None
            depth_settings = shot.depth or story.defaults.depth
            estimator = check_estimator(depth_settings.estimator or story.defaults.depth.estimator or DEFAULT_ESTIMATOR)
            options = {**story.defaults.depth.options, **(shot.depth.options if shot.depth else {})}
            _check_depth_options(options)
            weights = _weights_identity((*BACKEND_MODELS[spec.backend], estimator), root)
            clip = shot.clip
            if isinstance(clip, str) and clip != "auto":
                clip = ClipRef(path=clip)
            if isinstance(clip, ClipRef):
                path = _resolve(base, clip.path)
                info = probe(path)
                if clip.start >= info.duration:
                    raise InputError(f"clip start {clip.start}s is past the end of {path.name} ({info.duration:.2f}s)")
                clip = ClipRef(path=str(path), start=clip.start, end=clip.end)
            staged.append((i, shot, spec, estimator, options, weights, clip))
        except (AASError, ValueError) as exc:
            problems.append(_error_at(shot, i, str(exc)))
    if problems:
        raise InputError("the story cannot run:\n  " + "\n  ".join(problems))

    plans = []
    searches = sum(1 for s in staged if s[6] == "auto")
    searched = 0
    for i, shot, spec, estimator, options, weights, clip in staged:
        retrieval = None
        if clip == "auto":
            report(on_progress, searched / max(searches, 1), f"finding a clip for {shot.id}")
            searched += 1
            try:
                retrieval = _retrieve(story, shot, lib_path, out, root, runtime)
            except InputError as exc:
                problems.append(_error_at(shot, i, f"retrieval: {exc}"))
                continue
            if retrieval is None:
                query = shot.query or clip_text(shot.prompt)
                problems.append(_error_at(shot, i, f"retrieval found no clip for {query!r} (min length "
                                               f"{story.defaults.min_clip_duration}s); index more clips or set `clip:` to a file"))
                continue
            clip = ClipRef(path=retrieval["path"], start=retrieval["start"], end=retrieval["end"])
        if not Path(clip.path).is_file():
            problems.append(_error_at(shot, i, f"clip {clip.path} is missing; re-index the library or choose another clip"))
            continue
        depth = {
            "estimator": estimator,
            "frames": int(spec.frames),
            "size": (spec.width, spec.height),
            **options,
        }
        concepts = [aliases[name] for name in TOKEN.findall(shot.prompt) if name in aliases]
        key = json_digest({
            "v": CACHE_VERSION,
            "spec": spec.to_dict(),
            "clip": {"sha256": source_digest(clip.path), "start": clip.start, "end": clip.end},
            "depth": depth,
            "concepts": {c: concept_ids[c] for c in concepts},
            "weights": weights,
        })
        transition = shot.transition or story.defaults.transition
        duration = shot.transition_duration if shot.transition_duration is not None else story.defaults.transition_duration
        plans.append(ShotPlan(
            shot=dataclasses.replace(shot, seed=spec.seed, clip=clip), index=i, spec=spec.to_dict(), clip=clip,
            retrieval=retrieval, depth=depth, concepts=sorted(set(concepts)), caption=shot.caption,
            transition=transition, transition_duration=duration, key=key,
        ))
    if problems:
        raise InputError("the story cannot run:\n  " + "\n  ".join(problems))
    fps = float(plans[0].spec["fps"])
    resolved = dataclasses.replace(story, shots=[p.shot for p in plans], library=lib_path,
                                   output=dataclasses.replace(story.output, music=music))
    report(on_progress, 1.0, "story checked")
    return StoryPlan(story=resolved, shots=plans, out_dir=out, fps=fps, weights_root=root)


def _shot_dir(plan: StoryPlan, shot: ShotPlan) -> Path:
    return plan.out_dir / "shots" / shot.id / shot.key


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finished_generation(folder: Path) -> Optional[Path]:
    """A complete generate() folder inside `folder` (written atomically, so present = complete)."""
    from aas_core.generate.run import PARAMS_FILE, VIDEO_FILE

    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and not child.name.startswith(".") and (child / PARAMS_FILE).is_file() and (child / VIDEO_FILE).is_file():
            return child
    return None


def _outcome(shot: ShotPlan, status: ShotStatus, **extra: Any) -> ShotOutcome:
    return ShotOutcome(
        id=shot.id, status=status, key=shot.key, prompt=shot.shot.prompt, caption=shot.caption,
        transition=shot.transition, transition_duration=shot.transition_duration,
        clip={"path": shot.clip.path, "start": shot.clip.start, "end": shot.clip.end, "retrieved": shot.retrieval is not None,
              "score": (shot.retrieval or {}).get("score")},
        **extra,
    )


def _run_shot(plan: StoryPlan, shot: ShotPlan, runtime: Optional["Runtime"], progress: ProgressFn, cancel: Optional[CancelToken]) -> ShotOutcome:
    """Depth -> generate -> comparison video for one shot; returns the cached outcome when already done."""
    from aas_core.concepts.store import load_concept
    from aas_core.depth import depth_from_clip
    from aas_core.generate import ShotSpec, generate
    from aas_core.stitch import comparison_video

    folder = _shot_dir(plan, shot)
    done = _read_json(folder / DONE_FILE)
    if done is not None:
        progress(1.0, "already done")
        return _outcome(shot, "cached", **done)
    began = time.perf_counter()
    progress(0.0, "depth")
    depth = depth_from_clip(
        shot.clip.path, start=shot.clip.start, end=shot.clip.end, weights_root=plan.weights_root, runtime=runtime,
        cache_dir=plan.out_dir / "cache" / "depth", on_progress=lambda f, m: progress(0.2 * f, m), cancel=cancel,
        **shot.depth,
    )
    if cancel is not None:
        cancel.check()
    generated = _finished_generation(folder)
    if generated is None:
        concepts = [load_concept(name, plan.weights_root) for name in shot.concepts]
        result = generate(
            ShotSpec(**shot.spec), depth, concepts=concepts, on_progress=lambda f, m: progress(0.2 + 0.7 * f, m),
            cancel=cancel, weights_root=plan.weights_root, runtime=runtime, out_dir=folder,
        )
        generated, frames, tiny = result.folder, result.frames, result.tiny
    else:
        # Killed after generation finished but before the shot was marked done: keep that result.
        frames, tiny = _decode(generated / "shot.mp4"), bool((_read_json(generated / "params.json") or {}).get("tiny"))
    progress(0.9, "comparison video")
    comparison_video(depth.rgb if depth.rgb is not None else depth.as_uint8()[..., None].repeat(3, 3), depth.frames, frames,
                     folder / COMPARISON_FILE, float(shot.spec["fps"]))
    done = {
        "folder": str(generated), "video": str(generated / "shot.mp4"), "comparison": str(folder / COMPARISON_FILE),
        "frames": int(len(frames)), "fps": float(shot.spec["fps"]), "seconds": round(time.perf_counter() - began, 3), "tiny": tiny,
    }
    atomic_write_json(folder / DONE_FILE, done)
    progress(1.0, "done")
    return _outcome(shot, "generated", **done)


def _decode(path: Path) -> np.ndarray:
    from aas_core.video_io import iter_frames

    return np.stack([f.rgb for f in iter_frames(path)])


def _shot_metrics(plan: StoryPlan, shot: ShotPlan, outcome: ShotOutcome, runtime: Optional["Runtime"], clip_model: str) -> dict[str, Any]:
    """The shot's metrics, computed once per (shot result, metric models) and kept beside it."""
    from aas_core.concepts.store import load_concept
    from aas_core.depth import DepthVideo, load_estimator
    from aas_core.depth.pipeline import depth_from_clip
    from aas_core.metrics import shot_metrics

    folder = _shot_dir(plan, shot)
    key = json_digest({"v": CACHE_VERSION, "clip": clip_model, "depth": shot.depth["estimator"]})
    cached = _read_json(folder / METRICS_FILE)
    if cached is not None and cached.get("key") == key:
        return cached
    depth: DepthVideo = depth_from_clip(shot.clip.path, start=shot.clip.start, end=shot.clip.end, weights_root=plan.weights_root,
                                        runtime=runtime, cache_dir=plan.out_dir / "cache" / "depth", **shot.depth)
    estimator = load_estimator(shot.depth["estimator"], plan.weights_root, runtime)
    photos = []
    for name in shot.concepts:
        photos.extend(np.asarray(img) for img in load_concept(name, plan.weights_root).reference_images())
    result = shot_metrics(
        _decode(Path(outcome.video)), shot.shot.prompt, condition_depth=depth.frames, depth_estimate=estimator.predict,
        depth_model=shot.depth["estimator"], concept_photos=photos, clip_model=clip_model, weights_root=plan.weights_root,
        runtime=runtime,
    )
    data = {"key": key, **result.to_dict()}
    atomic_write_json(folder / METRICS_FILE, data)
    return data


def _write_run(plan: StoryPlan, outcomes: Sequence[ShotOutcome]) -> None:
    atomic_write_json(plan.out_dir / RUN_FILE, {
        "title": plan.story.title,
        "fps": plan.fps,
        "output": dataclasses.asdict(plan.story.output),
        "shots": [dataclasses.asdict(o) for o in outcomes],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def execute_plan(
    plan: StoryPlan,
    only: Optional[Sequence[str]] = None,
    metrics: bool = True,
    clip_model: str = DEFAULT_CLIP,
    runtime: Optional["Runtime"] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StoryRun:
    """Run every planned shot (or `only` these ids), then stitch and report; a failed shot does not stop the others."""
    from aas_core.device import pick_runtime

    began = time.perf_counter()
    runtime = runtime or pick_runtime()
    ids = [s.id for s in plan.shots]
    unknown = sorted(set(only or ()) - set(ids))
    if unknown:
        raise InputError(f"no shot with id {', '.join(unknown)}; the story's shots are {', '.join(ids)}")
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    save_story(plan.story, plan.out_dir / "story.yaml")
    outcomes: list[ShotOutcome] = []
    n = len(plan.shots)
    for i, shot in enumerate(plan.shots):
        if cancel is not None:
            cancel.check()

        def progress(fraction: float, message: str, i: int = i, shot: ShotPlan = shot) -> None:
            report(on_progress, 0.9 * (i + fraction) / n, f"[{shot.id} {i + 1}/{n}] {message}")

        if only and shot.id not in only:
            done = _read_json(_shot_dir(plan, shot) / DONE_FILE)
            outcomes.append(_outcome(shot, "cached", **done) if done else _outcome(shot, "skipped"))
            continue
        try:
            outcome = _run_shot(plan, shot, runtime, progress, cancel)
        except (Cancelled, KeyboardInterrupt):
            _write_run(plan, outcomes + [_outcome(s, "skipped") for s in plan.shots[i:]])
            raise
        except Exception as exc:  # noqa: BLE001 - one bad shot (OOM, corrupt clip, ...) must not stop the story
            outcome = _outcome(shot, "failed", error=f"{type(exc).__name__}: {exc}")
            (plan.out_dir / "shots" / shot.id).mkdir(parents=True, exist_ok=True)
            (plan.out_dir / "shots" / shot.id / "error.log").write_text(traceback.format_exc())
        outcomes.append(outcome)
        _write_run(plan, outcomes + [_outcome(s, "skipped") for s in plan.shots[i + 1:]])
    if metrics:
        for shot, outcome in zip(plan.shots, outcomes):
            if outcome.status in ("generated", "cached"):
                if cancel is not None:
                    cancel.check()
                report(on_progress, 0.9, f"[{shot.id}] metrics")
                try:
                    outcome.metrics = _shot_metrics(plan, shot, outcome, runtime, clip_model)
                except (AASError, ValueError, OSError) as exc:
                    outcome.metrics = {"error": f"{type(exc).__name__}: {exc}"}
        _write_run(plan, outcomes)
    run = assemble(plan.out_dir, on_progress=lambda f, m: report(on_progress, 0.92 + 0.08 * f, m), cancel=cancel)
    run.seconds = round(time.perf_counter() - began, 3)
    return run


def run_story(
    story: str | os.PathLike[str] | Story,
    out_dir: Optional[str | os.PathLike[str]] = None,
    only: Optional[Sequence[str]] = None,
    weights_root: Optional[str | os.PathLike[str]] = None,
    library: Optional[str | os.PathLike[str]] = None,
    metrics: bool = True,
    clip_model: str = DEFAULT_CLIP,
    runtime: Optional["Runtime"] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StoryRun:
    """Load, check and run a story file (or Story) into `out_dir`; resumes what an earlier run finished."""
    from aas_core.device import pick_runtime

    runtime = runtime or pick_runtime()
    if isinstance(story, Story):
        if out_dir is None:
            raise InputError("give an output folder for a story that is not a file")
        base = Path(".")
    else:
        base = Path(story).absolute().parent
        out_dir = out_dir or default_out_dir(story)
        story = load_story(story)
    plan = plan_story(story, out_dir, base, weights_root, library, runtime,
                      on_progress=lambda f, m: report(on_progress, 0.02 * f, m))
    return execute_plan(plan, only=only, metrics=metrics, clip_model=clip_model, runtime=runtime,
                        on_progress=on_progress, cancel=cancel)


def read_run(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run.json of a run folder, or an InputError saying how to make one."""
    path = Path(out_dir) / RUN_FILE
    data = _read_json(path)
    if data is None:
        raise InputError(f"{out_dir} is not a story run folder (no readable {RUN_FILE}); run a story into it first: python -m aas_core story run FILE --out {out_dir}")
    return data


def assemble(
    out_dir: str | os.PathLike[str],
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> StoryRun:
    """Stitch the finished shots of a run folder, draw its storyboard and write its reports."""
    from aas_core.stitch import StitchSettings, StitchShot, StoryboardRow, contact_sheet, stitch
    from aas_core.story.report import write_reports
    from aas_core.video_io import probe, sample_frames

    out = Path(out_dir).absolute()
    data = read_run(out)
    outcomes = [ShotOutcome(**s) for s in data["shots"]]
    ready = [o for o in outcomes if o.status in ("generated", "cached") and Path(o.video).is_file()]
    run = StoryRun(out_dir=str(out), shots=outcomes)
    if ready:
        output = data["output"]
        title = data.get("title", "") if output.get("title_card", True) else ""
        shots = [StitchShot(o.video, o.caption, o.transition, o.transition_duration) for o in ready]
        settings = StitchSettings(
            fps=float(data["fps"]), title=title, title_duration=output["title_duration"], captions=output["captions"],
            music=output.get("music"), music_start=output["music_start"], music_volume=output["music_volume"],
            music_fade_out=output["music_fade_out"],
        )
        stitched = stitch(shots, out / VIDEO_NAME, settings, on_progress=on_progress, cancel=cancel)
        run.video, run.duration = stitched.path, stitched.duration
        rows = []
        for o in ready:
            info = probe(o.video)
            times = [info.duration * k / STORYBOARD_FRAMES for k in range(STORYBOARD_FRAMES)]
            rows.append(StoryboardRow(o.id, o.caption or o.prompt, [f.rgb for f in sample_frames(o.video, times)]))
        run.storyboard = str(contact_sheet(rows, out / STORYBOARD_NAME))
    paths = write_reports(out, data, run)
    run.report_json, run.report_md, run.report_html = (str(p) for p in paths)
    return run
