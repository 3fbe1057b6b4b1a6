"""Story tab: text -> storyboard of shot cards -> takes per shot (pick one) -> stitch; save and load projects.

`render` builds the components, `listen` wires them; the handlers below are module-level functions taking the
UI context first (testable without a browser). The board data itself lives in `aas_core.ui.board`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.depth import DEFAULT_ESTIMATOR, ESTIMATORS
from aas_core.errors import InputError
from aas_core.generate import BACKENDS, PRESETS
from aas_core.limits import MAX_CAPTION_CHARS, MAX_PROMPT_CHARS, MAX_QUERY_CHARS, MAX_TITLE_CHARS
from aas_core.stitch import TRANSITIONS
from aas_core.story.schema import MAX_SHOTS
from aas_core.ui import board as boards
from aas_core.ui.board import StorySettings
from aas_core.ui.common import (
    AUDIO_TYPES,
    GENERATION_MODELS,
    UIContext,
    fetch_web_clip,
    files_of,
    hit_details,
    missing_weights,
    progress_fn,
    search_library,
    store_uploads,
    web_clip_thumbnail,
    wire_job,
    with_thumbnails,
)
from aas_core.ui.samples import CREDIT, SAMPLE_CHARACTER, SAMPLE_CLIPS, sample_photos

EXAMPLE_TITLE = "The bunny wakes up"
EXAMPLE_TEXT = (
    "a rabbit comes out of its burrow | <bunny> climbs out of a burrow on a sunny meadow | Morning in the meadow\n"
    "a rabbit stretches its arms | <bunny> stretches in the grass, soft morning light | A long stretch\n"
    "a rabbit yawns | <bunny> yawns happily under a tree | Ready for the day"
)
"""The example's prompts name the sample character, made at once from the sample stills when a visitor has none."""
EXAMPLE_STORIES = [[EXAMPLE_TITLE, EXAMPLE_TEXT],
                   ["Morning", "A boy walks to school. A dog runs after him. They reach the gate together."]]
RUN_FOLDER = "story"
MAX_STORY_TEXT_CHARS = 100 * (MAX_PROMPT_CHARS + MAX_CAPTION_CHARS + MAX_QUERY_CHARS)
"""The story text drafts at most MAX_SHOTS (100) shots of query | prompt | caption."""
SETTING_NAMES = ("backend", "preset", "width", "height", "frames", "steps", "estimator", "transition", "transition_s", "captions", "title_card")


@dataclass
class StoryParts:
    """The Story tab's components (what `listen` wires)."""

    title: Any
    text: Any
    board: Any
    version: Any
    settings: Any
    controls: dict[str, Any]
    music: Any
    shot_pick: Any
    candidates: Any
    hits: Any
    buttons: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    project_in: Any = None
    project_out: Any = None
    status: Any = None
    plan_shots: Any = None


# ---- pure helpers -------------------------------------------------------------------------------------------------

def status_markdown(run: Any, tiny: bool, board: Optional[list[dict[str, Any]]] = None) -> str:
    """One line per shot of a run: status, time, metrics or error; the takes of each shot when a board is given;
    why each `auto` clip was chosen (the whole-story choice's reasons)."""
    takes = {c["id"]: len(c["takes"]) for c in board or []}
    lines = ["| shot | status | takes | seconds | text match | consistency | depth adherence | identity |",
             "|---|---|---|---|---|---|---|---|"]
    for s in run.shots:
        m = s.metrics or {}

        def fmt(key: str, m: dict = m) -> str:
            value = m.get(key)
            return "-" if not isinstance(value, (int, float)) else f"{value:.3f}"

        status = s.status + (f": {s.error}" if s.error else "")
        lines.append(f"| {s.id} | {status} | {takes.get(s.id, '-')} | {s.seconds:.1f} | {fmt('clip_text_similarity')} | "
                     f"{fmt('frame_consistency')} | {fmt('depth_adherence')} | {fmt('character_identity')} |")
    chosen = [(s.id, (s.clip or {}).get("choice") or {}) for s in run.shots]
    lines += [f"- **{shot_id}** clip chosen automatically: {'; '.join(choice['reasons'])}"
              for shot_id, choice in chosen if choice.get("reasons")]
    if tiny or any(s.tiny for s in run.shots):
        lines.append("\n*Made with tiny random models: a workflow preview, not a real result.*")
    return "\n".join(lines)


def _choices(board: list[dict[str, Any]], keep: Optional[str] = None) -> Any:
    ids = [c["id"] for c in board]
    return gr.update(choices=ids, value=keep if keep in ids else (ids[0] if ids else None))


def _resolver(ctx: UIContext, session: Any):
    return lambda name: str(ctx.resolve(session, name))


def _thumb(session: Any, video: str) -> Optional[str]:
    """A small first-frame PNG beside a take's video (the card and take gallery show it)."""
    from PIL import Image

    from aas_core.video_io import iter_frames

    out = Path(video).with_name("thumb.png")
    if not out.is_file():
        try:
            frame = next(iter(iter_frames(video))).rgb
        except (StopIteration, OSError, ValueError):
            return None
        Image.fromarray(frame).save(out)
    return str(out)


def _run(ctx: UIContext, session: Any, story: Any, only: Optional[list[str]], progress: gr.Progress, job: str) -> Any:
    from aas_core.story import run_story

    return run_story(story, out_dir=session.outputs / RUN_FOLDER, only=only, weights_root=session.weights_root,
                     library=session.library, on_progress=progress_fn(progress, job),
                     cancel=session.new_job(job, ctx.config.job_time_limit_s))


def _music(ctx: UIContext, session: Any, settings: StorySettings) -> Optional[str]:
    return str(ctx.resolve(session, settings.music)) if settings.music else None


def _record_takes(ctx: UIContext, session: Any, board: list[dict[str, Any]], run: Any, settings: StorySettings,
                  ids: list[str]) -> list[dict[str, Any]]:
    """Every shot of `ids` that the run made gets a new take (earlier takes stay); the seed used is recorded."""
    from aas_core.story import load_story

    resolved = {s.id: s for s in load_story(Path(run.out_dir) / "story.yaml").shots}
    for outcome in run.shots:
        if outcome.id not in ids or outcome.status not in ("generated", "cached") or not outcome.video:
            continue
        card = boards.find(board, outcome.id)
        record = {**card, "seed": resolved[outcome.id].seed if outcome.id in resolved else card.get("seed")}
        thumb = _thumb(session, outcome.video)
        take = boards.take_of(record, settings, outcome, lambda p: ctx.show(session, p), ctx.show(session, thumb) if thumb else None)
        take["seed"] = record["seed"]
        board = boards.add_take(board, outcome.id, take)
    for outcome in run.shots:
        if outcome.id in ids and outcome.status == "failed":
            boards.find(board, outcome.id)["status"] = "failed"
    return board


def _take_videos(ctx: UIContext, session: Any, card: dict[str, Any]) -> tuple[Any, Any]:
    if card["pick"] is None:
        return gr.skip(), gr.skip()
    take = card["takes"][card["pick"]]
    video = str(ctx.resolve(session, take["video"]))
    comparison = str(ctx.resolve(session, take["comparison"])) if take.get("comparison") else None
    return video, comparison


# ---- handlers (module level; ctx first) -----------------------------------------------------------------------------

def _fresh_board(story: Any) -> tuple[list[dict[str, Any]], float, Any]:
    """A drafted or planned Story -> (board, version, shot choices): what loads a new storyboard."""
    board = boards.board_from_story(story)
    return board, time.time(), _choices(board)


def draft(ctx: UIContext, text: str, title: str, request: gr.Request):
    """Story text -> a fresh storyboard."""
    from aas_core.story import draft_story

    return _fresh_board(draft_story(text or "", title=title or ""))


def plan(ctx: UIContext, text: str, title: str, shots: Any, request: gr.Request, progress=gr.Progress()):
    """Story text -> a storyboard planned by the language model (one shot per sentence, with a warning, if it fails)."""
    from aas_core.story import plan_from_text

    session = ctx.session(request)
    result = plan_from_text(text or "", planner="llm", shots=int(shots) if shots else None, title=title or "",
                            weights_root=session.weights_root, on_progress=progress_fn(progress, "Planning"),
                            cancel=session.new_job("plan", ctx.config.job_time_limit_s))
    warnings = [ctx.message(w) for w in result.warnings]
    for warning in warnings:
        gr.Warning(warning)
    line = f"Planned {len(result.story.shots)} shot(s) with the {result.used} planner."
    return (*_fresh_board(result.story), "\n\n".join([line, *(f"⚠ {w}" for w in warnings)]))


def settings_of(ctx: UIContext, current: Any, *values: Any) -> dict[str, Any]:
    """The settings object from the settings controls (music kept)."""
    settings = StorySettings.parse(current)
    merged = {**settings.to_dict(), **dict(zip(SETTING_NAMES, values))}
    return StorySettings.parse(merged).to_dict()


def attach_music(ctx: UIContext, upload: Any, current: Any, request: gr.Request):
    """A music upload becomes part of the visitor's session and of the settings (None removes it)."""
    settings = StorySettings.parse(current)
    session = ctx.session(request)
    stored = store_uploads(ctx, session, "music", upload)
    settings.music = ctx.show(session, stored[0]) if stored else None
    return settings.to_dict()


def save_project(ctx: UIContext, title: str, text: str, board: Any, settings: Any, request: gr.Request) -> str:
    """The storyboard as a project file (a runnable story YAML + the app's state), clips named relative to it."""
    from aas_core.fsutil import atomic_write_bytes
    from aas_core.story import dump_story

    session = ctx.session(request)
    settings = StorySettings.parse(settings)
    board = boards.normalized(board)
    folder = session.outputs / "projects"
    name = "".join(ch if ch.isalnum() else "-" for ch in (title or "story")).strip("-").lower()[:60] or "story"
    story = boards.story_from_board(title, board, settings, lambda n: _relative(ctx, session, n, folder),
                                    music=_relative(ctx, session, settings.music, folder) if settings.music else None)
    path = folder / f"{name}.yaml"
    atomic_write_bytes(path, boards.project_text(dump_story(story), text or "", settings, board).encode("utf-8"))
    return str(path)


def _relative(ctx: UIContext, session: Any, name: str, folder: Path) -> str:
    """How a project names a file: the visitor's short name for their uploads and samples, else relative to the project."""
    import os

    path = ctx.resolve(session, name)
    short = ctx.show(session, path) if ctx.config.multi_user else None
    if short is not None:
        return short
    from aas_core.paths import visitor_name

    if session.folder is not None:
        candidate = visitor_name(path, session.folder, ctx.config.samples_dir)
        if ctx.resolve(session, candidate) == path:
            return candidate
    return os.path.relpath(path, folder)


def load_project(ctx: UIContext, file: Any, request: gr.Request):
    """A project (or any story file) back onto the board: title, text, settings, clips, takes and picks.

    Every file it names passes the visitor path guard (multi-user mode): a project naming someone else's file
    or a server file is refused as a whole.
    """
    from aas_core.story import load_story

    paths = files_of(file)
    if not paths:
        return (gr.skip(),) * (7 + len(SETTING_NAMES))
    session = ctx.session(request)
    story = load_story(paths[0])
    state = boards.app_state(Path(paths[0]).read_text(encoding="utf-8"))
    projects = session.outputs / "projects"

    def name_of(raw: str) -> str:
        # Relative names are tried against the app's project folder first (where the app saved it).
        beside = projects / raw
        if not ctx.config.multi_user and not Path(raw).is_absolute() and beside.is_file():
            return ctx.show(session, beside.resolve())
        return ctx.show(session, ctx.resolve(session, raw))

    refused = []
    for shot in story.shots:
        clip = shot.clip
        raw = clip if isinstance(clip, str) else clip.path
        if raw != "auto":
            try:
                name_of(raw)
            except InputError as exc:
                refused.append(f"{shot.id}: {exc}")
    for label, raw in (("music", story.output.music), ("library", story.library)):
        if raw and ctx.config.multi_user:
            refused.append(f"{label}: {boards_base(raw)} is not allowed in a shared app; upload music in Settings")
    if refused:
        raise InputError("this project names files you cannot use here:\n" + "\n".join(refused))
    board = boards.board_from_story(story, name_of)
    kept = state.get("takes") or {}
    lost = 0
    for card in board:
        saved = kept.get(card["id"]) or {}
        takes = []
        for take in saved.get("takes") or []:
            try:
                ctx.resolve(session, take["video"])
                takes.append(take)
            except (InputError, KeyError, TypeError):
                lost += 1
        if takes:
            card["takes"] = takes
            pick_at = saved.get("pick")
            card["pick"] = pick_at if isinstance(pick_at, int) and 0 <= pick_at < len(takes) else len(takes) - 1
            card["status"] = f"take {card['pick'] + 1} of {len(takes)}"
        card["thumb"] = saved.get("thumb")
    settings = StorySettings.parse({k: v for k, v in (state.get("settings") or {}).items() if k != "music"})
    settings.backend = story.defaults.generate.backend or settings.backend
    for key in ("width", "height", "frames", "steps", "preset"):
        value = getattr(story.defaults.generate, key)
        if value is not None:
            setattr(settings, key, value)
    settings.estimator = story.defaults.depth.estimator or settings.estimator
    settings.transition, settings.transition_s = story.defaults.transition, story.defaults.transition_duration
    settings.captions, settings.title_card = story.output.captions, story.output.title_card
    if story.output.music:
        settings.music = name_of(story.output.music)
    if lost:
        gr.Info(f"{lost} take(s) of this project are gone (files of an earlier visit are deleted when you leave); "
                "the shots and their settings are back, generate them again.")
    values = [getattr(settings, n) for n in SETTING_NAMES]
    return (story.title, state.get("text", ""), board, time.time(), settings.to_dict(), _choices(board),
            str(ctx.resolve(session, settings.music)) if settings.music else None, *values)


def boards_base(raw: str) -> str:
    """The base name of a path in a message."""
    from aas_core.paths import base_name

    return base_name(raw)


def find_clips(ctx: UIContext, board: Any, shot_id: str, request: gr.Request):
    """Library candidates for the selected shot (its query, else its prompt without tokens)."""
    from aas_core.metrics import clip_text as plain

    card = boards.find(boards.normalized(board), shot_id)
    query = card["query"] or plain(str(card["prompt"] or ""))
    if not query.strip():
        raise InputError(f"{card['id']} has no query or prompt to search with; write one first")
    session = ctx.session(request)
    hits = with_thumbnails([h.to_dict() for h in search_library(ctx, session, query, k=6)], web_clip_thumbnail(session))
    shown = [{"name": "" if h["remote"] else ctx.show(session, h["path"]), "url": h["path"] if h["remote"] else "",
              "start": h["start"], "end": h["end"], "thumbnail": h["thumbnail"],
              "label": " · ".join(p for p in (f"#{h['rank']} · {h['score']:.3f} · {h['start']:.1f}-{h['end']:.1f} s · {Path(h['path']).name}",
                                              hit_details(h)) if p)} for h in hits]
    if not shown:
        gr.Info(f"No clip matched {query!r}; index more clips in Clip Library")
    return shown, [(h["thumbnail"], h["label"]) for h in shown]


def pick_candidate(ctx: UIContext, hits: list, board: Any, shot_id: str, evt: gr.SelectData, request: gr.Request):
    """A clicked candidate becomes the shot's clip."""
    hit = hits[evt.index]
    session = ctx.session(request)
    if hit.get("url"):  # a web clip: downloaded once into the visitor's library, then used like a library clip
        got = fetch_web_clip(ctx, session, {"path": hit["url"], "start": hit["start"], "end": hit["end"], "remote": True})
        hit = {**hit, "name": ctx.show(session, ctx.resolve(session, got["path"])), "start": got["start"], "end": got["end"],
               "thumbnail": None}
    thumb = ctx.show(session, hit["thumbnail"]) if hit.get("thumbnail") else None
    return boards.set_clip(board, shot_id, hit["name"], hit["start"], hit["end"], thumb), time.time()


def use_selected(ctx: UIContext, clip: Optional[dict], board: Any, shot_id: str, request: gr.Request):
    """The clip picked in Clip Library becomes the shot's clip."""
    if not clip:
        raise InputError("no clip picked yet: click a hit in Clip Library first")
    session = ctx.session(request)
    return boards.set_clip(board, shot_id, ctx.show(session, clip["path"]), clip["start"], clip["end"]), time.time()


def use_depth(ctx: UIContext, ref: Optional[dict], board: Any, shot_id: str, request: gr.Request):
    """The clip span and depth settings tuned in Motion Structure go to the shot."""
    if not ref:
        raise InputError("no depth preview yet: make one in Motion Structure first")
    session = ctx.session(request)
    board = boards.set_depth(board, shot_id, ref, ctx.show(session, ref["path"]))
    gr.Info(f"{shot_id} now uses {ref['estimator']}, fit {ref['fit']}, speed {ref['speed']:g}, smoothing {ref['smoothing']:g}")
    return board, time.time()


def _generate(ctx: UIContext, title: str, board: Any, ids: Optional[list[str]], settings: Any, request: gr.Request,
              progress: gr.Progress, job: str):
    session = ctx.session(request)
    settings = StorySettings.parse(settings)
    board = boards.normalized(board)
    story = boards.story_from_board(title, board, settings, _resolver(ctx, session), _music(ctx, session, settings))
    made = sample_character(session, story)
    if made:
        gr.Info(made)
    run = _run(ctx, session, story, ids, progress, job)
    done = ids or [c["id"] for c in board]
    board = _record_takes(ctx, session, board, run, settings, done)
    shown = boards.find(board, done[0])
    video, comparison = _take_videos(ctx, session, shown)
    return board, time.time(), ctx.message(status_markdown(run, ctx.config.tiny, board)), video, comparison


def generate_shot(ctx: UIContext, title: str, board: Any, shot_id: str, settings: Any, request: gr.Request, progress=gr.Progress()):
    """Generate the selected shot (a new take when anything changed; earlier takes are kept)."""
    card = boards.find(boards.normalized(board), shot_id)
    return _generate(ctx, title, board, [card["id"]], settings, request, progress, f"{card['id']} (1 shot)")


def new_take(ctx: UIContext, title: str, board: Any, shot_id: str, settings: Any, request: gr.Request, progress=gr.Progress()):
    """Generate the selected shot again with the next seed: a new take beside the earlier ones."""
    board = boards.normalized(board)
    card = boards.find(board, shot_id)
    seeds = [t.get("seed") for t in card["takes"] if isinstance(t.get("seed"), int)]
    card["seed"] = (max(seeds) if seeds else (card["seed"] or 0)) + 1
    return _generate(ctx, title, board, [card["id"]], settings, request, progress, f"{card['id']} new take")


def generate_all(ctx: UIContext, title: str, board: Any, settings: Any, request: gr.Request, progress=gr.Progress()):
    """Generate every shot (blank prompts are refused up front, naming the shots)."""
    board = boards.normalized(board)
    return _generate(ctx, title, board, None, settings, request, progress, f"all {len(board)} shots")


ALL_SHOTS_GPU_CAP_S = 1800
"""The most one "Generate all" call asks ZeroGPU for (longer stories continue from their finished shots)."""


def shots_gpu_seconds(settings: Any, shots: int) -> int:
    """A ZeroGPU budget for `shots` shots made with the Story settings: the engine's per-shot estimate times the count."""
    from aas_core.generate import ShotSpec, estimate_gpu_seconds

    s = StorySettings.parse(settings)
    # The preset's own step count (Lightning has 1/2/4/8-step checkpoints only) when the settings keep the standard one.
    spec = ShotSpec(prompt="budget", backend=s.backend, frames=s.frames, width=s.width, height=s.height,  # type: ignore[arg-type]
                    preset=s.preset, steps=None if s.preset == "fast" else s.steps)  # type: ignore[arg-type]
    return min(ALL_SHOTS_GPU_CAP_S, estimate_gpu_seconds(spec) * max(1, shots))


def one_shot_budget(title: str, board: Any, shot_id: str, settings: Any, *_: Any, **__: Any) -> int:
    """ZeroGPU duration of Generate / New take (same arguments as the handlers)."""
    return shots_gpu_seconds(settings, 1)


def all_shots_budget(title: str, board: Any, settings: Any, *_: Any, **__: Any) -> int:
    """ZeroGPU duration of Generate all (same arguments as the handler)."""
    return shots_gpu_seconds(settings, len(boards.normalized(board)))


def stitch(ctx: UIContext, title: str, board: Any, settings: Any, request: gr.Request, progress=gr.Progress()):
    """Stitch the picked take of every shot that has one with `story.assemble_takes` (nothing is generated again)."""
    from aas_core.story import assemble_takes

    session = ctx.session(request)
    settings = StorySettings.parse(settings)
    board = boards.normalized(board)
    # Every take's files pass the visitor path guard (multi-user mode) before anything is read.
    takes = boards.picked_takes(board, settings, _resolver(ctx, session), tiny=ctx.config.tiny)
    job = f"stitch {len(takes)} takes"
    run = assemble_takes(session.outputs / RUN_FOLDER, takes, title=title or "",
                         output=boards.output_of(settings, _music(ctx, session, settings)),
                         on_progress=progress_fn(progress, job), cancel=session.new_job(job, ctx.config.job_time_limit_s))
    files = [p for p in (run.video, run.storyboard, run.report_html, run.report_md, run.report_json) if p and Path(p).is_file()]
    return run.video, run.storyboard, files, ctx.message(status_markdown(run, ctx.config.tiny, board))


def example_board() -> list[dict[str, Any]]:
    """The example story's cards, each on one of the sample clips."""
    from aas_core.story import draft_story

    board = boards.board_from_story(draft_story(EXAMPLE_TEXT, title=EXAMPLE_TITLE))
    for card, name in zip(board, SAMPLE_CLIPS):
        card["clip"] = name
    return board


def sample_character(session: Any, story: Any) -> Optional[str]:
    """Make the sample character (instant, from the sample stills) when `story` names it and the visitor has none.

    Returns a line saying so, or None. The example story and a draft of its text then run as they read.
    """
    from aas_core.concepts import list_concepts
    from aas_core.concepts.ip_adapter import make_ip_concept

    name, class_word = SAMPLE_CHARACTER
    if name not in {c.name for c in story.characters} or name in {c.name for c in list_concepts(session.weights_root)}:
        return None
    make_ip_concept(name, class_word, sample_photos(), root=session.weights_root)
    return f"Made the sample character <{name}> from the sample stills (Characters tab) for this story."


def make_example(ctx: UIContext, session: Any, progress: Any) -> tuple[list[dict[str, Any]], Any]:
    """Generate and stitch the example story in `session`; its video and storyboard are kept for later visitors."""
    settings = StorySettings.tiny() if ctx.config.tiny else StorySettings()
    board = example_board()
    story = boards.story_from_board(EXAMPLE_TITLE, board, settings, _resolver(ctx, session))
    sample_character(session, story)
    run = _run(ctx, session, story, None, progress, "example story")
    board = _record_takes(ctx, session, board, run, settings, [c["id"] for c in board])
    if run.video:
        cache = example_cache(ctx)
        cache.mkdir(parents=True, exist_ok=True)
        for made in (run.video, run.storyboard):
            if made:
                shutil.copy2(made, cache / Path(made).name)
    return board, run


def run_example(ctx: UIContext, request: gr.Request, progress=gr.Progress()):
    """The example story end to end on the sample clips: draft, generate every shot, stitch (cached for later visitors)."""
    session = ctx.session(request)
    cache = example_cache(ctx)
    if (cache / "story.mp4").is_file():
        gr.Info("Here is the example's result, made before. Generate its shots to make your own takes.")
        target = session.outputs / "example"
        target.mkdir(parents=True, exist_ok=True)
        copies = [shutil.copy2(cache / name, target / name) for name in ("story.mp4", "storyboard.png") if (cache / name).is_file()]
        board = example_board()
        return (EXAMPLE_TITLE, EXAMPLE_TEXT, board, time.time(), _choices(board), copies[0], copies[1] if len(copies) > 1 else None,
                copies, "The example's stitched result (made once, kept for every visitor).")
    board, run = make_example(ctx, session, progress)
    files = [p for p in (run.video, run.storyboard, run.report_html) if p and Path(p).is_file()]
    return (EXAMPLE_TITLE, EXAMPLE_TEXT, board, time.time(), _choices(board), run.video, run.storyboard, files,
            ctx.message(status_markdown(run, ctx.config.tiny, board)))


def warm_example(ctx: UIContext) -> None:
    """Make the example once in the background (on a Space), so the first visitor sees a finished video at once."""
    if (example_cache(ctx) / "story.mp4").is_file():
        return
    session = ctx.sessions.get("example-warmup")
    try:
        ctx.config.wait_ready()
        make_example(ctx, session, lambda *args, **kwargs: None)
    except Exception:  # noqa: BLE001 - a failed warm-up only means the first visitor waits for the real run
        import logging

        logging.getLogger("aas_core.ui").exception("could not make the example story in advance")
    finally:
        session.end_job()
        ctx.sessions.close("example-warmup")


def example_cache(ctx: UIContext) -> Path:
    """Where the example's finished video is kept for every later visitor (per tiny or real models)."""
    return ctx.config.cache_dir / "example" / ("tiny" if ctx.config.tiny else "real")


def card_edit(ctx: UIContext, board: Any, shot_id: str, field_name: str, value: Any):
    """One field of one card edited in place."""
    return boards.edit(board, shot_id, field_name, value)


def card_move(ctx: UIContext, board: Any, shot_id: str, delta: int):
    """A card moved up or down."""
    return boards.move(board, shot_id, delta), time.time()


def card_delete(ctx: UIContext, board: Any, shot_id: str):
    """A card removed."""
    board = boards.delete(board, shot_id)
    return board, time.time(), _choices(board)


def card_add(ctx: UIContext, board: Any):
    """A new empty card at the end."""
    board = boards.add(board)
    return board, time.time(), _choices(board, board[-1]["id"])


def card_pick(ctx: UIContext, board: Any, shot_id: str, evt: gr.SelectData, request: gr.Request):
    """A take clicked in a card's gallery becomes the one that is stitched."""
    board = boards.pick(board, shot_id, evt.index)
    video, comparison = _take_videos(ctx, ctx.session(request), boards.find(board, shot_id))
    return board, video, comparison


# ---- components ---------------------------------------------------------------------------------------------------

def render(ctx: UIContext) -> StoryParts:
    """Build the tab's components."""
    config = ctx.config
    defaults = StorySettings.tiny() if config.tiny else StorySettings()
    notice = gr.Markdown(missing_weights(config, [*GENERATION_MODELS, DEFAULT_ESTIMATOR]))
    ctx.refreshers.append((notice, lambda: missing_weights(config, [*GENERATION_MODELS, DEFAULT_ESTIMATOR])))
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            title = gr.Textbox(label="Title", elem_id="story-title", max_length=MAX_TITLE_CHARS)
            text = gr.Textbox(label="Story: one shot per line or sentence; `query | prompt | caption` to set each part",
                              lines=4, elem_id="story-text", max_length=MAX_STORY_TEXT_CHARS)
            gr.Examples(EXAMPLE_STORIES, inputs=[title, text], label="Example stories")
            with gr.Row():
                draft_btn = gr.Button("Draft shot list", elem_id="story-draft")
                plan_btn = gr.Button("Plan with AI", elem_id="story-plan")
                # 0, not blank: a blank Number shows 0 in the browser, which a minimum of 1 would mark invalid.
                plan_shots = gr.Number(0, label="Shots (0: the planner decides)", precision=0, minimum=0,
                                       maximum=MAX_SHOTS, elem_id="story-plan-shots")
                example_btn = gr.Button("▶ Run the example story (one click)", elem_id="story-example")
        with gr.Column(scale=1, min_width=280):
            with gr.Accordion("Settings", open=False, elem_id="story-settings"):
                controls = {
                    "backend": gr.Dropdown(list(BACKENDS), value=defaults.backend, label="Backend", elem_id="story-backend"),
                    "preset": gr.Dropdown(list(PRESETS), value=defaults.preset, label="Speed preset (fast: few-step motion model)",
                                          elem_id="story-preset"),
                    "width": gr.Number(defaults.width, label="Width", precision=0, minimum=16),
                    "height": gr.Number(defaults.height, label="Height", precision=0, minimum=16),
                    "frames": gr.Number(defaults.frames, label="Frames", precision=0, minimum=1, elem_id="story-frames"),
                    "steps": gr.Number(defaults.steps, label="Steps", precision=0, minimum=1, elem_id="story-steps"),
                    "estimator": gr.Dropdown(list(ESTIMATORS), value=DEFAULT_ESTIMATOR, label="Depth estimator"),
                    "transition": gr.Dropdown(list(TRANSITIONS), value=defaults.transition, label="Transition", elem_id="story-transition"),
                    "transition_s": gr.Number(defaults.transition_s, label="Transition (s)", minimum=0),
                    "captions": gr.Checkbox(defaults.captions, label="Captions", elem_id="story-captions"),
                    "title_card": gr.Checkbox(defaults.title_card, label="Title card", elem_id="story-title-card"),
                }
                music = gr.File(label="Music (optional)", file_types=AUDIO_TYPES, elem_id="story-music")
            project_in = gr.File(label="Load a story project (.yaml / .json)", file_types=[".yaml", ".yml", ".json"], elem_id="story-project-in")
            save_btn = gr.Button("Save the story project", elem_id="story-save")
            project_out = gr.File(label="Story project", interactive=False, elem_id="story-project-out")
    settings = gr.JSON(defaults.to_dict(), visible=False)
    board = gr.JSON([], visible=False)
    version = gr.Number(0, visible=False)
    gr.Markdown("### Shots\nEdit a card in place; ▲▼ reorder; every generation is kept as a take: click a take to use it in the story.")
    holder: list[StoryParts] = []

    @gr.render(inputs=[board], triggers=[version.change])
    def _cards(value: Any, request: gr.Request) -> None:
        cards(ctx, holder[0], value, request)

    with gr.Row(equal_height=True):
        add_btn = gr.Button("+ Add a shot", size="sm", elem_id="story-add")
        shot_pick = gr.Dropdown([], label="Shot", elem_id="story-shot", scale=2, min_width=140, allow_custom_value=True)
        find_btn = gr.Button("Find candidate clips", size="sm", elem_id="story-find")
        use_btn = gr.Button("Use the Clip Library pick", size="sm")
        depth_btn = gr.Button("Use Motion Structure settings", size="sm", elem_id="story-use-depth")
    hits = gr.State([])
    candidates = gr.Gallery(label="Candidates for this shot (click one to use it)", columns=6, height=150, allow_preview=False,
                            object_fit="contain", fit_columns=False, elem_id="story-candidates")
    with gr.Row():
        gen_btn = gr.Button("Generate this shot", variant="primary", elem_id="story-generate", min_width=140)
        take_btn = gr.Button("New take (next seed)", elem_id="story-new-take", min_width=140)
        all_btn = gr.Button("Generate all shots", elem_id="story-generate-all", min_width=140)
        stitch_btn = gr.Button("Stitch the picked takes", variant="primary", elem_id="story-stitch", min_width=140)
        stop_btn = gr.Button("■ Stop", variant="stop", visible=False, elem_id="story-stop", min_width=100)
        cancel_btn = gr.Button("Cancel", variant="secondary", size="sm", elem_id="story-cancel", min_width=80)
    status = gr.Markdown(elem_id="story-status")
    with gr.Row():
        shot_video = gr.Video(label="Shot (picked take)", autoplay=True, loop=True, elem_id="story-shot-video", min_width=200)
        comparison = gr.Video(label="source | depth | generated", autoplay=True, loop=True, min_width=200)
        final = gr.Video(label="Story", elem_id="story-final", min_width=200)
    with gr.Row():
        storyboard = gr.Image(label="Storyboard", type="filepath", min_width=200)
        downloads = gr.File(label="Downloads (video, storyboard, report)", file_count="multiple", interactive=False, min_width=200)
    gr.Markdown(CREDIT, elem_classes=["credit"])
    parts = StoryParts(title=title, text=text, board=board, version=version, settings=settings, controls=controls, music=music,
                       shot_pick=shot_pick, candidates=candidates, hits=hits, project_in=project_in, project_out=project_out, status=status,
                       plan_shots=plan_shots)
    parts.buttons = {"draft": draft_btn, "plan": plan_btn, "example": example_btn, "save": save_btn, "add": add_btn, "find": find_btn, "use": use_btn,
                     "depth": depth_btn, "generate": gen_btn, "take": take_btn, "all": all_btn, "stitch": stitch_btn,
                     "stop": stop_btn, "cancel": cancel_btn}
    parts.outputs = {"shot_video": shot_video, "comparison": comparison, "final": final, "storyboard": storyboard,
                     "downloads": downloads}
    holder.append(parts)
    return parts


def cards(ctx: UIContext, parts: StoryParts, board: Any, request: gr.Request) -> None:
    """The shot cards (called inside gr.render whenever the board's structure changes)."""
    session = ctx.session(request)
    board = boards.normalized(board)
    if not board:
        gr.Markdown("*No shots yet: draft them from the story text, run the example, or add one.*")
        return
    h = ctx.handler
    for n, card in enumerate(board):
        sid = card["id"]
        with gr.Group(elem_classes=["shot-card"], elem_id=f"card-{sid}"):
            take = card["takes"][card["pick"]] if card["pick"] is not None else None
            seed = take.get("seed") if take else card["seed"]
            depth = card.get("depth")
            tuned = f" · depth {depth['estimator']}, {depth['fit']}, speed {depth['speed']:g}" if depth else ""
            gr.Markdown(f"**{n + 1}. {sid}** · {card['status']} · seed {'-' if seed is None else seed} · strength "
                        f"{'default' if card['strength'] in (None, '') else card['strength']}{tuned}", elem_classes=["card-head"])
            with gr.Row(equal_height=True):
                thumb = _safe(ctx, session, card.get("thumb")) or _clip_thumb(ctx, session, card["clip"])
                gr.Image(thumb, label="clip", height=96, min_width=120, show_label=True, interactive=False, container=True,
                         visible=thumb is not None, key=f"thumb-{sid}-{card['clip']}")
                latest = _safe(ctx, session, take["video"]) if take else None
                gr.Video(latest, label="picked take", height=120, min_width=150, autoplay=False, loop=True, interactive=False,
                         visible=latest is not None, key=f"take-{sid}-{card['pick']}-{len(card['takes'])}")
            prompt = gr.Textbox(card["prompt"], label="prompt", lines=2, key=f"prompt-{sid}", interactive=True, max_length=MAX_PROMPT_CHARS, elem_classes=["card-prompt"])
            with gr.Row():
                caption = gr.Textbox(card["caption"], label="caption", min_width=140, key=f"caption-{sid}", interactive=True, max_length=MAX_CAPTION_CHARS)
                query = gr.Textbox(card["query"], label="search query", min_width=140, key=f"query-{sid}", interactive=True, max_length=MAX_QUERY_CHARS)
            with gr.Row():
                clip = gr.Textbox(card["clip"], label="clip (auto, a file name, or name@start-end)", min_width=180, key=f"clip-{sid}", interactive=True)
                seed_box = gr.Number(card["seed"], label="seed", precision=0, min_width=80, key=f"seed-{sid}", interactive=True)
                strength = gr.Number(card["strength"], label="strength", min_width=80, key=f"strength-{sid}", interactive=True)
            if card["takes"]:
                items = [(_safe(ctx, session, t.get("thumb")) or _safe(ctx, session, t["video"]), f"take {i + 1} · seed {t.get('seed')}")
                         for i, t in enumerate(card["takes"])]
                gallery = gr.Gallery([i for i in items if i[0]], label=f"takes ({len(card['takes'])}), take {card['pick'] + 1} is stitched; "
                                     "click another to use it", columns=6, height=110, allow_preview=False, object_fit="contain", fit_columns=False,
                                     elem_classes=["card-takes"], key=f"takes-{sid}-{len(card['takes'])}")
                gallery.select(h(_pick_for(sid), outputs=3), parts.board, [parts.board, parts.outputs["shot_video"], parts.outputs["comparison"]],
                               api_name=False, queue=False)
            with gr.Row():
                up = gr.Button("▲", size="sm", min_width=40, elem_classes=["card-up"])
                down = gr.Button("▼", size="sm", min_width=40, elem_classes=["card-down"])
                select = gr.Button("Select", size="sm", min_width=60)
                remove = gr.Button("✕ Delete", size="sm", variant="stop", min_width=60)
        for box, name in ((prompt, "prompt"), (caption, "caption"), (query, "query"), (clip, "clip"), (seed_box, "seed"), (strength, "strength")):
            box.blur(h(_edit_for(sid, name), outputs=1), [parts.board, box], parts.board, api_name=False, queue=False)
        up.click(h(_move_for(sid, -1), outputs=2), parts.board, [parts.board, parts.version], api_name=False, queue=False)
        down.click(h(_move_for(sid, 1), outputs=2), parts.board, [parts.board, parts.version], api_name=False, queue=False)
        remove.click(h(_delete_for(sid), outputs=3), parts.board, [parts.board, parts.version, parts.shot_pick], api_name=False, queue=False)
        select.click(lambda sid=sid: sid, None, parts.shot_pick, api_name=False, queue=False)


def _clip_thumb(ctx: UIContext, session: Any, clip: str) -> Optional[str]:
    """A still of a card's clip at its start (cached in the visitor's outputs); None for `auto` or a refused name."""
    import hashlib

    from PIL import Image

    from aas_core.video_io import iter_frames

    try:
        parsed = boards.parse_clip(clip)
        if parsed is None:
            return None
        path = ctx.resolve(session, parsed[0])
        out = session.outputs / "thumbs" / (hashlib.sha1(f"{path}|{parsed[1]}".encode()).hexdigest()[:16] + ".jpg")
        if not out.is_file():
            frame = next(iter(iter_frames(path, parsed[1], parsed[1] + 0.5))).rgb
            out.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(frame)
            image.thumbnail((240, 240))
            image.save(out, quality=85)
        return str(out)
    except (InputError, OSError, ValueError, StopIteration):
        return None


def _safe(ctx: UIContext, session: Any, name: Optional[str]) -> Optional[str]:
    if not name:
        return None
    try:
        return str(ctx.resolve(session, name))
    except InputError:
        return None


def _edit_for(sid: str, name: str):
    def run(ctx: UIContext, board: Any, value: Any):
        return card_edit(ctx, board, sid, name, value)
    return run


def _move_for(sid: str, delta: int):
    def run(ctx: UIContext, board: Any):
        return card_move(ctx, board, sid, delta)
    return run


def _delete_for(sid: str):
    def run(ctx: UIContext, board: Any):
        return card_delete(ctx, board, sid)
    return run


def _pick_for(sid: str):
    def run(ctx: UIContext, board: Any, evt: gr.SelectData, request: gr.Request):
        return card_pick(ctx, board, sid, evt, request)
    return run


def listen(ctx: UIContext, parts: StoryParts) -> None:
    """Wire the tab's events."""
    h, b, o = ctx.handler, parts.buttons, parts.outputs
    run_buttons = [b["generate"], b["take"], b["all"], b["stitch"], b["example"], b["draft"], b["plan"]]
    control_list = [parts.controls[n] for n in SETTING_NAMES]

    for control in control_list:
        control.change(h(settings_of, outputs=1), [parts.settings, *control_list], parts.settings, api_name=False, queue=False)
    parts.music.change(h(attach_music, outputs=1), [parts.music, parts.settings], parts.settings, api_name=False)
    b["draft"].click(h(draft, outputs=3), [parts.text, parts.title], [parts.board, parts.version, parts.shot_pick], api_name="draft")
    wire_job(b["plan"].click, h(plan, outputs=4, gpu=True, duration=300), [parts.text, parts.title, parts.plan_shots],
             [parts.board, parts.version, parts.shot_pick, parts.status], buttons=run_buttons, stop=b["stop"], status=parts.status,
             api_name="plan")
    parts.project_in.upload(h(load_project, outputs=7 + len(SETTING_NAMES)), parts.project_in,
                            [parts.title, parts.text, parts.board, parts.version, parts.settings, parts.shot_pick, parts.music, *control_list],
                            api_name="load_project")
    b["save"].click(h(save_project, outputs=1), [parts.title, parts.text, parts.board, parts.settings], parts.project_out, api_name="save_project")
    b["add"].click(h(card_add, outputs=3), parts.board, [parts.board, parts.version, parts.shot_pick], api_name=False)
    parts.shot_pick.change(lambda: ([], None), None, [parts.hits, parts.candidates], api_name=False, queue=False)
    wire_job(b["find"].click, h(find_clips, outputs=2, gpu=True, duration=60), [parts.board, parts.shot_pick],
             [parts.hits, parts.candidates], buttons=[b["find"]], api_name="find_clips")
    parts.candidates.select(h(pick_candidate, outputs=2), [parts.hits, parts.board, parts.shot_pick], [parts.board, parts.version], api_name=False)
    b["use"].click(h(use_selected, outputs=2), [ctx.selected_clip, parts.board, parts.shot_pick], [parts.board, parts.version], api_name=False)
    b["depth"].click(h(use_depth, outputs=2), [ctx.depth_ref, parts.board, parts.shot_pick], [parts.board, parts.version], api_name=False)
    gen_outs = [parts.board, parts.version, parts.status, o["shot_video"], o["comparison"]]
    common = {"buttons": run_buttons, "stop": b["stop"], "status": parts.status}
    wire_job(b["generate"].click, h(generate_shot, outputs=5, gpu=True, duration=one_shot_budget),
             [parts.title, parts.board, parts.shot_pick, parts.settings], gen_outs, api_name="generate_shot", **common)
    wire_job(b["take"].click, h(new_take, outputs=5, gpu=True, duration=one_shot_budget),
             [parts.title, parts.board, parts.shot_pick, parts.settings], gen_outs, api_name="new_take", **common)
    wire_job(b["all"].click, h(generate_all, outputs=5, gpu=True, duration=all_shots_budget),
             [parts.title, parts.board, parts.settings], gen_outs, api_name="generate_all", **common)
    wire_job(b["stitch"].click, h(stitch, outputs=4), [parts.title, parts.board, parts.settings],
             [o["final"], o["storyboard"], o["downloads"], parts.status], api_name="stitch", **common)
    wire_job(b["example"].click, h(run_example, outputs=9, gpu=True, duration=1800), [],
             [parts.title, parts.text, parts.board, parts.version, parts.shot_pick, o["final"], o["storyboard"], o["downloads"], parts.status],
             api_name="run_example", **common)
    for button in (b["stop"], b["cancel"]):
        button.click(ctx.cancel, None, None, api_name=False, concurrency_limit=None)
