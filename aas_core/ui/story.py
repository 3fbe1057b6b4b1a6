"""Story tab: text -> editable shot list -> generate one / all shots -> stitch -> play and download; save/load projects."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.depth import DEFAULT_ESTIMATOR, ESTIMATORS
from aas_core.generate import BACKENDS
from aas_core.stitch import TRANSITIONS
from aas_core.ui.common import GPU_QUEUE, UIContext, action, files_of, missing_weights, progress_fn
from aas_core.ui.library import hit_label

SHOT_COLUMNS = ["id", "query", "prompt", "caption", "clip", "seed", "strength"]
EXAMPLE_STORIES = [
    ["The kite", "a red ball rolling to the right | <hero> kicks a red ball across a meadow | Hero plays in the meadow\n"
                 "a kite drifting left | a green kite drifts over the hills at sunset | The kite flies away"],
    ["Morning", "A boy walks to school. A dog runs after him. They reach the gate together."],
]
AUDIO_TYPES = [".mp3", ".wav", ".m4a", ".ogg", ".flac"]
GENERATION_MODELS = ["sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15", DEFAULT_ESTIMATOR]
"""What the default backend and depth estimator need (named in the weights notice)."""


def clip_text(clip: Any) -> str:
    """A shot's clip as table text: `auto`, a path, or `path@start-end`."""
    if isinstance(clip, str):
        return clip
    end = "" if clip.end is None else f"{clip.end:g}"
    return f"{clip.path}@{clip.start:g}-{end}"


def parse_clip(text: Any) -> Any:
    """Table text back to the story's clip choice."""
    from aas_core.story import ClipRef

    text = str(text or "").strip()
    if not text or text == "auto":
        return "auto"
    if "@" in text:
        path, span = text.rsplit("@", 1)
        start, _, end = span.partition("-")
        try:
            return ClipRef(path=path, start=float(start or 0), end=float(end) if end else None)
        except ValueError as exc:
            raise gr.Error(f"clip {text!r}: write path@start-end in seconds, e.g. clip.mp4@1.5-4 ({exc})") from exc
    return text


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, column: str, kind: type) -> Any:
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        raise gr.Error(f"the {column} column holds {value!r}; write a number or leave it empty for the default") from None


def rows_of(story: Any) -> list[list[Any]]:
    """The editable table of a story's shots."""
    rows = []
    for shot in story.shots:
        strength = f"{shot.generate.strength:g}" if shot.generate and shot.generate.strength is not None else ""
        rows.append([shot.id, shot.query, shot.prompt, shot.caption, clip_text(shot.clip),
                     "" if shot.seed is None else str(shot.seed), str(strength)])
    return rows


def story_of(title: str, rows: list[list[Any]], backend: str, width: float, height: float, frames: float, steps: float,
             estimator: str, transition: str, transition_s: float, captions: bool, title_card: bool,
             music: Optional[str]) -> Any:
    """The Story the tab's fields describe (validated by the story schema)."""
    from aas_core.story import Character, Defaults, DepthSettings, GenerateSettings, Output, Shot, Story
    from aas_core.story.schema import TOKEN, with_ids

    shots = []
    for row in rows or []:
        row = list(row) + [""] * (len(SHOT_COLUMNS) - len(row))
        shot_id, query, prompt, caption, clip, seed, strength = row[: len(SHOT_COLUMNS)]
        if _blank(prompt):
            continue
        shots.append(Shot(
            id="" if _blank(shot_id) else str(shot_id).strip(), query="" if _blank(query) else str(query),
            prompt=str(prompt), caption="" if _blank(caption) else str(caption), clip=parse_clip(clip),
            seed=None if _blank(seed) else _number(seed, "seed", int),
            generate=None if _blank(strength) else GenerateSettings(strength=_number(strength, "strength", float)),
        ))
    if not shots:
        raise gr.Error("the shot list is empty: write the story above and click 'Draft shot list'")
    names = sorted({n for s in shots for n in TOKEN.findall(s.prompt)})
    return with_ids(Story(
        title=title or "",
        characters=[Character(name=n) for n in names],
        defaults=Defaults(
            generate=GenerateSettings(backend=backend, width=int(width), height=int(height), frames=int(frames), steps=int(steps)),
            depth=DepthSettings(estimator=estimator), transition=transition, transition_duration=float(transition_s),
        ),
        output=Output(title_card=bool(title_card), captions=bool(captions), music=music),
        shots=shots,
    ))


def status_markdown(run: Any, tiny: bool) -> str:
    """One line per shot: status, time, metrics or error."""
    lines = ["| shot | status | seconds | text match | consistency | depth adherence | identity |", "|---|---|---|---|---|---|---|"]
    for s in run.shots:
        m = s.metrics or {}

        def fmt(key: str) -> str:
            value = m.get(key)
            return "-" if value is None else f"{value:.3f}"

        status = s.status + (f": {s.error}" if s.error else "")
        lines.append(f"| {s.id} | {status} | {s.seconds:.1f} | {fmt('clip_text_similarity')} | {fmt('frame_consistency')} | "
                     f"{fmt('depth_adherence')} | {fmt('character_identity')} |")
    if tiny or any(s.tiny for s in run.shots):
        lines.append("\n*Made with tiny random models: a workflow preview, not a real result.*")
    return "\n".join(lines)


def render(ctx: UIContext) -> None:
    """Build the tab and wire its events."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, GENERATION_MODELS))
    candidates_state = gr.State([])
    with gr.Row():
        with gr.Column(scale=2):
            title = gr.Textbox(label="Title", elem_id="story-title")
            text = gr.Textbox(label="Story: one shot per line or sentence; `query | prompt | caption` to set each part",
                              lines=4, elem_id="story-text")
            gr.Examples(EXAMPLE_STORIES, inputs=[title, text], label="Example stories")
            draft_btn = gr.Button("Draft shot list", elem_id="story-draft")
        with gr.Column(scale=1):
            with gr.Accordion("Settings", open=False):
                backend = gr.Dropdown(list(BACKENDS), value=BACKENDS[0], label="Backend")
                with gr.Row():
                    width = gr.Number(64 if config.tiny else 512, label="Width", precision=0)
                    height = gr.Number(64 if config.tiny else 512, label="Height", precision=0)
                with gr.Row():
                    frames = gr.Number(8 if config.tiny else 16, label="Frames", precision=0)
                    steps = gr.Number(2 if config.tiny else 25, label="Steps", precision=0)
                estimator = gr.Dropdown(list(ESTIMATORS), value=DEFAULT_ESTIMATOR, label="Depth estimator")
                transition = gr.Dropdown(list(TRANSITIONS), value="crossfade", label="Transition")
                transition_s = gr.Number(0.5, label="Transition (s)", minimum=0)
                with gr.Row():
                    captions = gr.Checkbox(True, label="Captions")
                    title_card = gr.Checkbox(True, label="Title card")
                music = gr.File(label="Music (optional)", file_types=AUDIO_TYPES)
            project_in = gr.File(label="Load a story project (.yaml / .json)", file_types=[".yaml", ".yml", ".json"])
            save_btn = gr.Button("Save the story project")
            project_out = gr.File(label="Story project", interactive=False)
    table = gr.Dataframe(headers=SHOT_COLUMNS, datatype=["str"] * len(SHOT_COLUMNS),
                         type="array", interactive=True, column_count=(len(SHOT_COLUMNS), "fixed"), wrap=True,
                         column_widths=["8%", "16%", "24%", "14%", "24%", "7%", "7%"],
                         label="Shot list (edit freely; clip = auto, a file, or file@start-end)", elem_id="story-table")
    with gr.Row():
        shot_pick = gr.Dropdown([], label="Shot", elem_id="story-shot", allow_custom_value=True)
        find_btn = gr.Button("Find candidate clips")
        use_btn = gr.Button("Use the clip picked in Clip Library")
    candidates = gr.Gallery(label="Candidates (click to use for this shot)", columns=6, height=160, allow_preview=False,
                            object_fit="contain", fit_columns=False, elem_id="story-candidates")
    with gr.Row():
        gen_btn = gr.Button("Generate this shot", variant="primary", elem_id="story-generate")
        regen_btn = gr.Button("Regenerate with a new seed")
        all_btn = gr.Button("Generate all shots", elem_id="story-generate-all")
        stitch_btn = gr.Button("Stitch", variant="primary", elem_id="story-stitch")
        cancel_btn = gr.Button("Cancel", variant="stop")
    with gr.Row():
        shot_video = gr.Video(label="Shot", autoplay=True, loop=True, elem_id="story-shot-video")
        comparison = gr.Video(label="source | depth | generated", autoplay=True, loop=True)
        final = gr.Video(label="Story", elem_id="story-final")
    status = gr.Markdown(elem_id="story-status")
    with gr.Row():
        storyboard = gr.Image(label="Storyboard", type="filepath")
        downloads = gr.File(label="Downloads (video, storyboard, report)", file_count="multiple", interactive=False)

    settings = [backend, width, height, frames, steps, estimator, transition, transition_s, captions, title_card, music]

    def build(session: Any, title_text: str, rows: list, *values: Any) -> Any:
        *rest, music_file = values
        music_path = None
        paths = files_of(music_file)
        if paths:
            target = session.upload_dir("music") / Path(paths[0]).name
            shutil.copy2(paths[0], target)
            music_path = str(target)
        return story_of(title_text, rows, *rest, music_path)

    def ids_of(rows: list) -> list[str]:
        return [str(r[0]) for r in rows or [] if r and not _blank(r[0])]

    @action(config)
    def draft(text_value: str, title_text: str):
        from aas_core.story import draft_story

        rows = rows_of(draft_story(text_value or "", title=title_text or ""))
        ids = ids_of(rows)
        return rows, gr.update(choices=ids, value=ids[0] if ids else None)

    @action(config)
    def load_project(file: Any):
        from aas_core.story import load_story

        paths = files_of(file)
        if not paths:
            return gr.skip(), gr.skip(), gr.skip()
        story = load_story(paths[0])
        rows = rows_of(story)
        ids = ids_of(rows)
        return story.title, rows, gr.update(choices=ids, value=ids[0] if ids else None)

    @action(config)
    def save_project(title_text: str, rows: list, backend_: str, width_: float, height_: float, frames_: float, steps_: float, estimator_: str, transition_: str,
                 transition_s_: float, captions_: bool, title_card_: bool, music_: Any,
                     request: gr.Request):
        from aas_core.story import save_story

        session = ctx.session(request)
        story = build(session, title_text, rows, backend_, width_, height_, frames_, steps_, estimator_, transition_, transition_s_, captions_, title_card_, music_)
        name = "".join(ch if ch.isalnum() else "-" for ch in (title_text or "story")).strip("-").lower() or "story"
        return str(save_story(story, session.outputs / "projects" / f"{name}.yaml"))

    @action(config, gpu=True, duration=60)
    def find(rows: list, shot_id: str, request: gr.Request):
        from aas_core import library
        from aas_core.metrics import clip_text as plain

        row = next((r for r in rows or [] if str(r[0]) == str(shot_id)), None)
        if row is None:
            raise gr.Error("choose a shot first (draft the shot list, then pick a shot)")
        query = row[1] if not _blank(row[1]) else plain(str(row[2]))
        session = ctx.session(request)
        hits = [h.to_dict() for h in library.search(query, k=6, library=session.library, weights_root=config.weights_root)]
        return hits, [(h["thumbnail"], hit_label(h)) for h in hits]

    def set_clip(rows: list, shot_id: str, clip: dict) -> list:
        out = [list(r) for r in rows or []]
        for r in out:
            if str(r[0]) == str(shot_id):
                r[4] = f"{clip['path']}@{clip['start']:g}-{clip['end']:g}"
                return out
        raise gr.Error("choose a shot first")

    def pick_candidate(hits: list, rows: list, shot_id: str, evt: gr.SelectData):
        return set_clip(rows, shot_id, hits[evt.index])

    def use_selected(clip: Optional[dict], rows: list, shot_id: str):
        if not clip:
            raise gr.Error("no clip picked yet: click a hit in Clip Library first")
        return set_clip(rows, shot_id, clip)

    def bump_seed(rows: list, shot_id: str):
        out = [list(r) for r in rows or []]
        for i, r in enumerate(out):
            if str(r[0]) == str(shot_id):
                r[5] = str((i if _blank(r[5]) else _number(r[5], "seed", int)) + 1)
        return out

    def outputs_of(run: Any, shot_id: Optional[str]):
        shot = next((s for s in run.shots if s.id == shot_id and s.video), None)
        files = [p for p in (run.video, run.storyboard, run.report_html, run.report_md, run.report_json) if p and Path(p).is_file()]
        return (shot.video if shot else gr.skip(), shot.comparison if shot and shot.comparison else gr.skip(),
                run.video, run.storyboard, files, status_markdown(run, config.tiny))

    def run(session: Any, story: Any, only: Optional[list[str]], progress: gr.Progress):
        from aas_core.story import run_story

        return run_story(story, out_dir=session.outputs / "story", only=only, weights_root=session.weights_root,
                         library=session.library, on_progress=progress_fn(progress), cancel=session.new_job())

    @action(config, gpu=True, duration=600)
    def generate_one(title_text: str, rows: list, shot_id: str, backend_: str, width_: float, height_: float, frames_: float, steps_: float, estimator_: str, transition_: str,
                 transition_s_: float, captions_: bool, title_card_: bool, music_: Any,
                 request: gr.Request, progress=gr.Progress()):
        session = ctx.session(request)
        story = build(session, title_text, rows, backend_, width_, height_, frames_, steps_, estimator_, transition_, transition_s_, captions_, title_card_, music_)
        if not shot_id or shot_id not in [s.id for s in story.shots]:
            raise gr.Error("choose which shot to generate (the Shot menu above)")
        return outputs_of(run(session, story, [shot_id], progress), shot_id)

    @action(config, gpu=True, duration=1800)
    def generate_all(title_text: str, rows: list, shot_id: str, backend_: str, width_: float, height_: float, frames_: float, steps_: float, estimator_: str, transition_: str,
                 transition_s_: float, captions_: bool, title_card_: bool, music_: Any,
                 request: gr.Request, progress=gr.Progress()):
        session = ctx.session(request)
        return outputs_of(run(session, build(session, title_text, rows, backend_, width_, height_, frames_, steps_, estimator_, transition_, transition_s_, captions_, title_card_, music_), None, progress), shot_id)

    @action(config, gpu=True, duration=300)
    def stitch(title_text: str, rows: list, shot_id: str, backend_: str, width_: float, height_: float, frames_: float, steps_: float, estimator_: str, transition_: str,
                 transition_s_: float, captions_: bool, title_card_: bool, music_: Any,
                 request: gr.Request, progress=gr.Progress()):
        from aas_core.story import read_run

        session = ctx.session(request)
        story = build(session, title_text, rows, backend_, width_, height_, frames_, steps_, estimator_, transition_, transition_s_, captions_, title_card_, music_)
        try:
            done = [s["id"] for s in read_run(session.outputs / "story")["shots"] if s["status"] in ("generated", "cached")]
        except Exception:  # noqa: BLE001 - no run folder yet is the same as no finished shot
            done = []
        done = [i for i in done if i in {s.id for s in story.shots}]
        if not done:
            raise gr.Error("no finished shot to stitch yet: generate at least one shot first")
        return outputs_of(run(session, story, done[:1], progress), shot_id)

    outs = [shot_video, comparison, final, storyboard, downloads, status]
    draft_btn.click(draft, [text, title], [table, shot_pick], api_name="draft")
    table.input(lambda rows: gr.update(choices=ids_of(rows)), table, shot_pick, api_name=False)
    project_in.upload(load_project, project_in, [title, table, shot_pick], api_name="load_project")
    save_btn.click(save_project, [title, table, *settings], project_out, api_name="save_project")
    find_btn.click(find, [table, shot_pick], [candidates_state, candidates], concurrency_id=GPU_QUEUE, api_name=False)
    candidates.select(pick_candidate, [candidates_state, table, shot_pick], table, api_name=False)
    use_btn.click(use_selected, [ctx.selected_clip, table, shot_pick], table, api_name=False)
    args = [title, table, shot_pick, *settings]
    gen_btn.click(generate_one, args, outs, concurrency_id=GPU_QUEUE, api_name="generate_shot")
    bumped = regen_btn.click(bump_seed, [table, shot_pick], table, api_name=False)
    bumped.then(generate_one, args, outs, concurrency_id=GPU_QUEUE, api_name=False)
    all_btn.click(generate_all, args, outs, concurrency_id=GPU_QUEUE, api_name="generate_all")
    stitch_btn.click(stitch, args, outs, concurrency_id=GPU_QUEUE, api_name="stitch")
    cancel_btn.click(ctx.cancel, None, None, queue=False, api_name=False)
    ctx.refreshers.append((notice, lambda: missing_weights(config, GENERATION_MODELS)))
