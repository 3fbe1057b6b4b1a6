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
import functools
import inspect
import os
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from aas_core.errors import AASError, Cancelled, InputError
from aas_core.fsutil import atomic_write_bytes, exclusive, file_digest, json_digest, sweep_temps
from aas_core.library.captions import fetch_remote, is_url, url_name
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.registry import DEFAULT_CLIP
from aas_core.story.assembly import assemble
from aas_core.story.outcome import (
    CACHE_VERSION,
    DONE_FILE,
    RUN_LOCK,
    SHOT_STATUSES,
    ShotOutcome,
    ShotStatus,
    StoryRun,
    read_json,
    read_run,
    write_run,
)
from aas_core.story.schema import TOKEN, ClipRef, Shot, Story, load_story, save_story
from aas_core.story.shot import ShotRequest, ShotRun, run_shot

if TYPE_CHECKING:
    from aas_core.device import Runtime
    from aas_core.generate import ShotSpec

__all__ = [
    "SHOT_STATUSES",
    "ShotOutcome",
    "ShotPlan",
    "ShotStatus",
    "StoryPlan",
    "StoryRun",
    "assemble",
    "default_out_dir",
    "execute_plan",
    "plan_story",
    "read_run",
    "run_story",
]


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

    def request(self) -> ShotRequest:
        """The `run_shot` request of this shot."""
        from aas_core.generate import ShotSpec

        options = {k: v for k, v in self.depth.items() if k not in ("estimator", "frames", "size")}
        return ShotRequest(spec=ShotSpec(**self.spec), clip=self.clip, estimator=self.depth["estimator"], depth_options=options,
                           concepts=list(self.concepts), metrics_prompt=self.shot.prompt)


@dataclass
class StoryPlan:
    """A validated story, ready to run."""

    story: Story
    shots: list[ShotPlan]
    out_dir: Path
    fps: float
    weights_root: Optional[str]


@dataclass
class _Staged:
    """A shot after step 3 of planning: settings checked, clip not yet chosen when it is `auto`."""

    index: int
    shot: Shot
    spec: "ShotSpec"
    estimator: str
    options: dict[str, Any]
    weights: dict[str, Any]
    clip: Union[ClipRef, str]


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
    base = Path(base_dir).absolute()
    out = Path(out_dir).absolute()
    root = str(weights_root) if weights_root is not None else None
    problems: list[str] = []
    # 1. Characters: story alias -> concept name, and what identifies each concept's files.
    aliases, concept_ids = _characters(story, root, problems)
    # 2. Story-wide files: music and the clip library.
    music = _music(story, base, problems)
    lib_path = str(_resolve(base, story.library)) if story.library else (str(library) if library else None)
    # 3. Every shot's settings, depth options, weights and fixed clip (no retrieval yet).
    staged = []
    for i, shot in enumerate(story.shots):
        try:
            staged.append(_stage(story, shot, i, aliases, base, root))
        except (AASError, ValueError) as exc:
            problems.append(_error_at(shot, i, str(exc)))
    _raise_problems(problems)
    # 4. Clips for `clip: auto` shots, chosen for the whole story at once (searches cached in the run folder), then cache keys.
    chosen, missing = _auto_clips(story, staged, lib_path, out, root, runtime, on_progress)
    plans = []
    for s in staged:
        retrieval = chosen.get(s.shot.id)
        if s.shot.id in missing:
            problems.append(_error_at(s.shot, s.index, missing[s.shot.id]))
            continue
        if retrieval is not None:
            # A web clip that could not be downloaded keeps its URL (no end = the whole clip): the run tries again.
            end = retrieval["end"] if retrieval["end"] > retrieval["start"] else None
            s.clip = ClipRef(path=retrieval["path"], start=retrieval["start"], end=end)
        assert isinstance(s.clip, ClipRef)
        if not is_url(s.clip.path) and not Path(s.clip.path).is_file():
            problems.append(_error_at(s.shot, s.index, f"clip {s.clip.path} is missing; re-index the library or choose another clip"))
            continue
        plans.append(_shot_plan(story, s, s.clip, retrieval, aliases, concept_ids))
    _raise_problems(problems)
    # 5. The resolved story (clips chosen, seeds fixed, absolute paths) that the run folder keeps.
    resolved = dataclasses.replace(story, shots=[p.shot for p in plans], library=lib_path,
                                   output=dataclasses.replace(story.output, music=music))
    report(on_progress, 1.0, "story checked")
    return StoryPlan(story=resolved, shots=plans, out_dir=out, fps=float(plans[0].spec["fps"]), weights_root=root)


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise InputError("the story cannot run:\n  " + "\n  ".join(problems))


def _characters(story: Story, root: Optional[str], problems: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(alias -> concept name, concept name -> digests of its files); unknown concepts go to `problems`."""
    from aas_core.concepts.store import META_FILE as CONCEPT_META
    from aas_core.concepts.store import TABLE_FILE, load_concept

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
    return aliases, concept_ids


def _music(story: Story, base: Path, problems: list[str]) -> Optional[str]:
    if not story.output.music:
        return None
    music_path = _resolve(base, story.output.music)
    if not music_path.is_file():
        problems.append(f"output.music: {music_path} does not exist; check the path (relative paths start at the story file)")
    return str(music_path)


def _stage(story: Story, shot: Shot, index: int, aliases: dict[str, str], base: Path, root: Optional[str]) -> _Staged:
    """A shot's checked settings: ShotSpec, estimator, depth options, weights present, a given clip probed."""
    from aas_core.depth.estimators import DEFAULT_ESTIMATOR, check_estimator
    from aas_core.generate import ShotSpec
    from aas_core.generate.presets import shot_models
    from aas_core.video_io import probe

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
    weights = _weights_identity((*shot_models(spec), estimator), root)  # the preset's motion model too
    clip: Union[ClipRef, str, None] = shot.clip
    if isinstance(clip, str) and clip != "auto":
        clip = ClipRef(path=clip)
    if isinstance(clip, ClipRef) and not is_url(clip.path):
        path = _resolve(base, clip.path)
        info = probe(path)
        if clip.start >= info.duration:
            raise InputError(f"clip start {clip.start}s is past the end of {path.name} ({info.duration:.2f}s)")
        clip = ClipRef(path=str(path), start=clip.start, end=clip.end)
    return _Staged(index, shot, spec, estimator, options, weights, clip if clip is not None else "auto")


def _auto_clips(
    story: Story, staged: Sequence[_Staged], library: Optional[str], out_dir: Path, weights_root: Optional[str],
    runtime: Optional["Runtime"], on_progress: Optional[ProgressFn],
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({shot id: chosen hit + query + reasons}, {shot id: why none}) for every `clip: auto` shot (aas_core.story.choose)."""
    from aas_core.metrics import clip_text
    from aas_core.story.choose import AutoShot, Need, Span, choose_story_clips

    auto = [AutoShot(Need(s.shot.id, float(s.spec.frames or 0) / float(s.spec.fps), s.spec.width / s.spec.height),
                     s.shot.query or clip_text(s.shot.prompt)) for s in staged if s.clip == "auto"]
    # Pinned clips keep their footage: no automatic choice may reuse it.
    pinned = [Span(s.clip.path, s.clip.start, s.clip.end, s.shot.id) for s in staged if isinstance(s.clip, ClipRef)]
    return choose_story_clips(auto, pinned, library, out_dir, story.defaults.min_clip_duration, weights_root, runtime, on_progress)


def _shot_plan(story: Story, staged: _Staged, clip: ClipRef, retrieval: Optional[dict[str, Any]], aliases: dict[str, str],
               concept_ids: dict[str, dict[str, str]]) -> ShotPlan:
    """The shot's plan and cache key: every setting that changes its result, digested."""
    from aas_core.depth.pipeline import source_digest

    spec, shot = staged.spec, staged.shot
    depth = {"estimator": staged.estimator, "frames": int(spec.frames or 0), "size": (spec.width, spec.height), **staged.options}
    concepts = [aliases[name] for name in TOKEN.findall(shot.prompt) if name in aliases]
    key = json_digest({
        "v": CACHE_VERSION,
        "spec": spec.to_dict(),
        "clip": {"url" if is_url(clip.path) else "sha256": clip.path if is_url(clip.path) else source_digest(clip.path),
                 "start": clip.start, "end": clip.end},
        "depth": depth,
        "concepts": {c: concept_ids[c] for c in concepts},
        "weights": staged.weights,
    })
    transition = shot.transition or story.defaults.transition
    duration = shot.transition_duration if shot.transition_duration is not None else story.defaults.transition_duration
    return ShotPlan(
        shot=dataclasses.replace(shot, seed=spec.seed, clip=clip), index=staged.index, spec=spec.to_dict(), clip=clip,
        retrieval=retrieval, depth=depth, concepts=sorted(set(concepts)), caption=shot.caption,
        transition=transition, transition_duration=duration, key=key,
    )


def _shot_dir(plan: StoryPlan, shot: ShotPlan) -> Path:
    return plan.out_dir / "shots" / shot.id / shot.key


def _outcome(shot: ShotPlan, status: ShotStatus, **extra: Any) -> ShotOutcome:
    return ShotOutcome(
        id=shot.id, status=status, key=shot.key, prompt=shot.shot.prompt, caption=shot.caption,
        transition=shot.transition, transition_duration=shot.transition_duration,
        clip={"path": shot.clip.path, "start": shot.clip.start, "end": shot.clip.end, "retrieved": shot.retrieval is not None,
              "score": (shot.retrieval or {}).get("score"), "choice": (shot.retrieval or {}).get("choice")},
        **extra,
    )


def _made(shot: ShotPlan, made: ShotRun) -> ShotOutcome:
    """A run_shot result as the run's outcome record."""
    return _outcome(shot, "cached" if made.cached else "generated", metrics=made.metrics, **made.record())


def _write_run(plan: StoryPlan, outcomes: Sequence[ShotOutcome]) -> None:
    write_run(plan.out_dir, plan.story.title, plan.fps, dataclasses.asdict(plan.story.output), outcomes)


ERROR_LOG = "error.log"


def _one_writer(execute: Any) -> Any:
    """Run `execute(plan, ...)` holding the run folder's lock: a second run on the folder is refused (BusyError).

    Under the lock nobody else writes the folder, so leftovers of a killed run (temp files) are swept first.
    """

    @functools.wraps(execute)
    def locked(plan: StoryPlan, *args: Any, **kwargs: Any) -> Any:
        busy = f"another story run is writing {plan.out_dir}; wait for it to finish (or cancel it), or choose another output folder"
        with exclusive(plan.out_dir / RUN_LOCK, busy):
            sweep_temps(plan.out_dir)
            return execute(plan, *args, **kwargs)

    return locked


@_one_writer
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
    # 1. The run folder keeps the resolved story.
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    save_story(plan.story, plan.out_dir / "story.yaml")
    # 2. Each shot through run_shot; run.json is rewritten after every shot, so a kill loses nothing finished.
    outcomes: list[ShotOutcome] = []
    n = len(plan.shots)
    for i, shot in enumerate(plan.shots):
        if cancel is not None:
            cancel.check()

        def progress(fraction: float, message: str, i: int = i, shot: ShotPlan = shot) -> None:
            report(on_progress, 0.92 * (i + fraction) / n, f"[{shot.id} {i + 1}/{n}] {message}")

        try:
            outcome = _execute_shot(plan, shot, only, metrics, clip_model, runtime, progress, cancel)
        except (Cancelled, KeyboardInterrupt):
            _write_run(plan, outcomes + [_outcome(s, "skipped") for s in plan.shots[i:]])
            raise
        except Exception as exc:  # noqa: BLE001 - one bad shot (OOM, corrupt clip, ...) must not stop the story
            outcome = _failed(plan, shot, exc)
        if outcome.status in ("generated", "cached"):
            (plan.out_dir / "shots" / shot.id / ERROR_LOG).unlink(missing_ok=True)  # the log of an earlier failure
        outcomes.append(outcome)
        _write_run(plan, outcomes + [_outcome(s, "skipped") for s in plan.shots[i + 1:]])
    # 3. Stitch, storyboard, reports.
    run = assemble(plan.out_dir, on_progress=lambda f, m: report(on_progress, 0.92 + 0.08 * f, m), cancel=cancel)
    run.seconds = round(time.perf_counter() - began, 3)
    return run


def _execute_shot(plan: StoryPlan, shot: ShotPlan, only: Optional[Sequence[str]], metrics: bool, clip_model: str,
                  runtime: "Runtime", progress: ProgressFn, cancel: Optional[CancelToken]) -> ShotOutcome:
    """One shot of a run: made (or found finished) by run_shot; a shot left out by `only` is only looked up."""
    folder = _shot_dir(plan, shot)
    if only and shot.id not in only and read_json(folder / DONE_FILE) is None:
        return _outcome(shot, "skipped")
    request = shot.request()
    if is_url(request.clip.path):
        # A web clip (not downloadable when the story was planned): fetched into the library's cache, or this shot fails.
        progress(0.0, f"downloading {url_name(request.clip.path)}")
        local = fetch_remote(request.clip.path, plan.story.library)
        request = dataclasses.replace(request, clip=ClipRef(path=local, start=request.clip.start, end=request.clip.end))
    made = run_shot(request, folder, weights_root=plan.weights_root, runtime=runtime,
                    depth_cache=plan.out_dir / "cache" / "depth", metrics=metrics, clip_model=clip_model,
                    on_progress=progress, cancel=cancel)
    return _made(shot, made)


def _failed(plan: StoryPlan, shot: ShotPlan, exc: BaseException) -> ShotOutcome:
    """A failed shot's outcome; the traceback goes to shots/ID/error.log for a bug report (when it can be written)."""
    error = f"{type(exc).__name__}: {exc}"
    try:
        atomic_write_bytes(plan.out_dir / "shots" / shot.id / ERROR_LOG, traceback.format_exc().encode())
    except OSError as log_exc:  # a full or read-only disk must not stop the other shots
        error += f" (error.log could not be written: {log_exc})"
    return _outcome(shot, "failed", error=error)


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
