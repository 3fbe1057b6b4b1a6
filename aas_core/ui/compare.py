"""Compare tab: one shot under 2-4 settings side by side in one synced, labelled grid video, with the metrics of each."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr
import numpy as np

from aas_core.depth import DEFAULT_ESTIMATOR, ESTIMATORS
from aas_core.errors import InputError
from aas_core.generate import BACKENDS
from aas_core.limits import MAX_PROMPT_CHARS
from aas_core.ui.common import GENERATION_MODELS, UIContext, missing_weights, progress_fn, wire_job

MAX_VARIANTS = 4
METRIC_HEADERS = ["#", "text", "steady", "depth", "identity", "s", "setting"]
"""Short headers so the numbers stay readable at 1366 px; the table's label spells each one out."""
"""Numbers first, the setting's description last: readable at 1366 px."""


def panel_label(k: int, backend: str, strength: float, concept: bool, estimator: str) -> str:
    """The short label drawn on a grid panel and shown in the metrics table."""
    return f"{k + 1}: {backend} s={strength:g}{' +char' if concept else ''} {estimator.split('-')[0]}"


def _labelled(frames: np.ndarray, text: str) -> np.ndarray:
    """Frames with a label bar across the top (PIL's default font; readable on small panels)."""
    from PIL import Image, ImageDraw

    out = frames.copy()
    h, w = out.shape[1:3]
    bar = max(10, h // 8)
    stamp = Image.new("RGB", (w, bar), (0, 0, 0))
    ImageDraw.Draw(stamp).text((2, max(0, (bar - 10) // 2)), text[: max(4, w // 6)], fill=(255, 255, 255))
    stamp_arr = np.asarray(stamp)
    out[:, :bar] = (0.35 * out[:, :bar] + 0.65 * stamp_arr).astype(np.uint8)
    return out


def grid_frames(videos: list[np.ndarray], labels: Optional[list[str]] = None) -> np.ndarray:
    """Panels side by side (two rows when there are more than two), time-aligned to the longest video, labelled."""
    length = max(len(v) for v in videos)
    h, w = videos[0].shape[1:3]
    cols = len(videos) if len(videos) <= 2 else 2
    rows = math.ceil(len(videos) / cols)
    out = np.zeros((length, rows * h, cols * w, 3), np.uint8)
    for k, video in enumerate(videos):
        if labels:
            video = _labelled(np.asarray(video)[..., :3], labels[k])
        r, c = divmod(k, cols)
        for t in range(length):
            # Backends make different frame counts (VACE 4k+1): show each panel's nearest frame in time.
            frame = video[min(len(video) - 1, round(t * len(video) / length))]
            out[t, r * h : (r + 1) * h, c * w : (c + 1) * w] = frame[:h, :w, :3]
    return out


def clip_of(clip: Optional[dict], ref: Optional[dict]) -> dict:
    """The library pick, else the last Motion Structure source."""
    if clip:
        return clip
    if ref:
        return {"path": ref["path"], "start": ref["start"], "end": ref["end"], "label": ref.get("label", "")}
    raise InputError("no clip yet: click a hit in Clip Library (or make a depth preview in Motion Structure) first")


def variants_json(ctx: UIContext, count: Any, *slots: Any) -> list[dict[str, Any]]:
    """The visible settings rows as the list the `compare` endpoint takes."""
    n = min(max(int(count or 2), 2), MAX_VARIANTS)
    return [dict(zip(("backend", "strength", "character", "estimator"), slots[i * 4 : i * 4 + 4])) for i in range(n)]


def variants_of(rows: Any) -> list[tuple[str, float, bool, str]]:
    """(backend, strength, with character, estimator) of each setting, checked."""
    if not isinstance(rows, list) or not 2 <= len(rows) <= MAX_VARIANTS:
        raise InputError(f"compare 2 to {MAX_VARIANTS} settings ({len(rows) if isinstance(rows, list) else 0} given)")
    out = []
    for k, row in enumerate(rows):
        row = row if isinstance(row, dict) else {}
        backend, estimator = row.get("backend"), row.get("estimator", DEFAULT_ESTIMATOR)
        if backend not in BACKENDS or estimator not in ESTIMATORS:
            raise InputError(f"setting {k + 1}: choose a backend ({', '.join(BACKENDS)}) and an estimator ({', '.join(ESTIMATORS)})")
        try:
            strength = float(row.get("strength", 0.8))
        except (TypeError, ValueError):
            raise InputError(f"setting {k + 1}: strength {row.get('strength')!r} is not a number") from None
        out.append((str(backend), strength, bool(row.get("character")), str(estimator)))
    return out


def compare(ctx: UIContext, clip: Optional[dict], ref: Optional[dict], text: str, name: Optional[str], seed_value: float, count: float,
            size: float, n_steps: float, settings: Any, request: gr.Request, progress=gr.Progress()):
    """Generate the clip under each setting; one labelled grid video and a metrics row per setting."""
    from aas_core.fsutil import json_digest
    from aas_core.generate import ShotSpec
    from aas_core.story import ClipRef, ShotRequest, run_shot
    from aas_core.video_io import write_video

    config = ctx.config
    session = ctx.session(request)
    variants = variants_of(settings)
    source = clip_of(clip, ref)
    path = ctx.resolve(session, source["path"])
    token = session.new_job("compare", config.job_time_limit_s)
    report = progress_fn(progress, f"compare {len(variants)} settings")
    outs, table_rows, labels, started, spec = [], [], [], time.perf_counter(), None
    for k, (backend, strength, with_concept, estimator) in enumerate(variants):
        concepts, shot_prompt = [], text
        if with_concept:
            if not name:
                raise InputError(f"setting {k + 1} uses a character: train or import one in Characters and pick it above")
            concepts = [name]
            shot_prompt = text if f"<{name}>" in text else f"<{name}> {text}"
        spec = ShotSpec(prompt=shot_prompt, backend=backend, strength=strength, frames=int(count), width=int(size), height=int(size),
                        steps=int(n_steps), seed=int(seed_value))
        shot = ShotRequest(spec=spec, clip=ClipRef(path=str(path), start=float(source["start"]), end=source["end"]),
                           estimator=estimator, concepts=concepts)
        # One folder per exact setting: comparing again (or adding a setting) reuses the finished ones.
        folder = session.outputs / "compare" / json_digest({"spec": spec.to_dict(), "clip": [str(path), source["start"], source["end"]],
                                                           "estimator": estimator, "concepts": concepts})[:24]
        made = run_shot(shot, folder, weights_root=session.weights_root, depth_cache=session.depth_cache,
                        on_progress=lambda f, m, k=k: report(  # type: ignore[misc]
                            (k + f) / len(variants), f"setting {k + 1} of {len(variants)}: {m}"),
                        cancel=token)
        outs.append(made.load_frames())
        label = panel_label(k, backend, strength, with_concept, estimator)
        labels.append(label)
        metrics = made.metrics or {}
        fmt = lambda v: "-" if not isinstance(v, (int, float)) else round(float(v), 3)  # noqa: E731
        table_rows.append([k + 1, fmt(metrics.get("clip_text_similarity")), fmt(metrics.get("frame_consistency")),
                           fmt(metrics.get("depth_adherence")), fmt(metrics.get("character_identity")), round(made.seconds, 1),
                           f"{backend}, strength {strength:g}, character {'yes' if with_concept else 'no'}, {estimator}"])
    size_hw = outs[0].shape[1:3]
    if any(o.shape[1:3] != size_hw for o in outs):
        raise InputError("the settings made shots of different sizes; keep one size for a side-by-side grid")
    assert spec is not None
    out = write_video(session.outputs / "compare" / f"grid-{int(time.time() * 1000)}.mp4", grid_frames(outs, labels), float(spec.fps))
    note = f"{len(outs)} settings in {time.perf_counter() - started:.1f} s, same seed {int(seed_value)}. Panels: " + " | ".join(labels)
    if config.tiny:
        note += "\n\n*Tiny random models: a workflow preview, not a real comparison.*"
    return str(out), table_rows, note


def refresh_concepts(ctx: UIContext, request: gr.Request):
    """The visitor's characters for the character picker."""
    from aas_core.concepts import list_concepts

    names = [c.name for c in list_concepts(ctx.session(request).weights_root)]
    return gr.update(choices=names, value=names[0] if names else None)


def show_clip(ctx: UIContext, clip: Optional[dict[str, Any]]):
    """The picked clip's name."""
    return f"Clip: {clip['label']}" if clip else gr.skip()


def add_setting(ctx: UIContext, count: float):
    """One more settings row (up to the maximum)."""
    n = min(int(count or 2) + 1, MAX_VARIANTS)
    return (n, *[gr.update(visible=i < n) for i in range(MAX_VARIANTS)])


def remove_setting(ctx: UIContext, count: float):
    """One settings row fewer (at least two)."""
    n = max(int(count or 2) - 1, 2)
    return (n, *[gr.update(visible=i < n) for i in range(MAX_VARIANTS)])


@dataclass
class CompareParts:
    """The tab's components."""

    source: Any
    inputs: list[Any]
    concept: Any
    count: Any
    rows: list[Any]
    slots: list[Any]
    add_btn: Any
    remove_btn: Any
    run_btn: Any
    cancel_btn: Any
    grid: Any
    table: Any
    note: Any
    variants: Any


def render(ctx: UIContext) -> CompareParts:
    """Build the tab's components."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, GENERATION_MODELS))
    ctx.refreshers.append((notice, lambda: missing_weights(config, GENERATION_MODELS)))
    gr.Markdown("Compare one shot under 2–4 settings, same seed. The clip is the one picked in *Clip Library* "
                "(or the source of the last *Motion Structure* preview).")
    with gr.Row():
        with gr.Column(min_width=320):
            source = gr.Markdown("No clip picked yet.", elem_id="compare-source")
            prompt = gr.Textbox(label="Prompt (use <name> for a character)", value="a big rabbit in a sunny meadow", elem_id="compare-prompt",
                                max_length=MAX_PROMPT_CHARS)
            concept = gr.Dropdown([], label="Character (for settings with 'character' ticked)", allow_custom_value=True)
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, min_width=70)
                frames = gr.Number(8 if config.tiny else 16, label="Frames (VACE: 4k+1)", precision=0, min_width=70)
                side = gr.Number(64 if config.tiny else 512, label="Size", precision=0, min_width=70)
                steps = gr.Number(2 if config.tiny else 25, label="Steps", precision=0, min_width=70)
            count = gr.Number(2, visible=False)
            variants = gr.JSON([{"backend": BACKENDS[0], "strength": s, "character": False, "estimator": DEFAULT_ESTIMATOR}
                                for s in (0.8, 0.3)], visible=False)
            rows, slots = [], []
            for i in range(MAX_VARIANTS):
                with gr.Row(visible=i < 2, elem_id=f"compare-setting-{i + 1}") as row:
                    cells = [
                        gr.Dropdown(list(BACKENDS), value=BACKENDS[0], label=f"{i + 1} · backend", min_width=110),
                        gr.Dropdown([0.2, 0.3, 0.5, 0.65, 0.8, 1.0], value=(0.8, 0.3, 0.5, 1.0)[i], label="strength",
                                    allow_custom_value=True, min_width=80),
                        gr.Checkbox(False, label="character", min_width=80),
                        gr.Dropdown(list(ESTIMATORS), value=DEFAULT_ESTIMATOR, label="depth", min_width=130),
                    ]
                rows.append(row)
                slots += cells
            with gr.Row():
                add_btn = gr.Button("+ Add setting", size="sm", elem_id="compare-add")
                remove_btn = gr.Button("− Remove setting", size="sm")
            with gr.Row():
                run_btn = gr.Button("Compare", variant="primary", elem_id="compare-run")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="compare-cancel")
        with gr.Column(min_width=320):
            table = gr.Dataframe(headers=METRIC_HEADERS, type="array", interactive=False, elem_id="compare-metrics", wrap=True,
                                 label="Metrics, higher is better: text = prompt match, steady = frame consistency, depth = depth "
                                       "adherence, identity = character likeness; s = seconds",
                                 column_widths=["5%", "11%", "13%", "11%", "14%", "7%", "39%"])
            grid = gr.Video(label="Side by side: each panel labelled with its setting", autoplay=True, loop=True, elem_id="compare-video")
            note = gr.Markdown(elem_id="compare-note")
    return CompareParts(source, [prompt, concept, seed, frames, side, steps], concept, count, rows, slots, add_btn, remove_btn,
                        run_btn, cancel_btn, grid, table, note, variants)


def listen(ctx: UIContext, p: CompareParts) -> None:
    """Wire the tab's events."""
    h = ctx.handler
    ctx.selected_clip.change(h(show_clip, outputs=1), ctx.selected_clip, p.source, api_name=False)
    p.add_btn.click(h(add_setting, outputs=1 + MAX_VARIANTS), p.count, [p.count, *p.rows], api_name=False, queue=False)
    p.remove_btn.click(h(remove_setting, outputs=1 + MAX_VARIANTS), p.count, [p.count, *p.rows], api_name=False, queue=False)
    wire_job(p.run_btn.click, h(compare, outputs=3, gpu=True, duration=1200),
             [ctx.selected_clip, ctx.depth_ref, *p.inputs, p.variants], [p.grid, p.table, p.note], buttons=[p.run_btn],
             status=p.note, api_name="compare")
    for trigger in [p.count, *p.slots]:
        trigger.change(h(variants_json, outputs=1), [p.count, *p.slots], p.variants, api_name=False, queue=False)
    p.cancel_btn.click(ctx.cancel, None, None, api_name=False, concurrency_limit=None)
    ctx.concepts_changed.change(h(refresh_concepts, outputs=1), None, p.concept, api_name=False)
    ctx.loaders.append((h(refresh_concepts, outputs=1), [p.concept]))
