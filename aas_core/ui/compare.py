"""Compare tab: one shot under 2-4 settings side by side in one synced grid video, with the metrics of each."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import numpy as np

from aas_core.depth import DEFAULT_ESTIMATOR, ESTIMATORS
from aas_core.generate import BACKENDS
from aas_core.ui.characters import concept_names
from aas_core.ui.common import GPU_QUEUE, UIContext, action, missing_weights, progress_fn
from aas_core.ui.story import GENERATION_MODELS

VARIANT_COLUMNS = ["backend", "strength", "concept", "estimator"]
MAX_VARIANTS = 4


def grid_frames(videos: list[np.ndarray]) -> np.ndarray:
    """Panels side by side (two rows when there are more than two), time-aligned to the longest video."""
    length = max(len(v) for v in videos)
    h, w = videos[0].shape[1:3]
    cols = len(videos) if len(videos) <= 2 else 2
    rows = math.ceil(len(videos) / cols)
    out = np.zeros((length, rows * h, cols * w, 3), np.uint8)
    for k, video in enumerate(videos):
        r, c = divmod(k, cols)
        for t in range(length):
            # Backends make different frame counts (VACE 4k+1): show each panel's nearest frame in time.
            frame = video[min(len(video) - 1, round(t * len(video) / length))]
            out[t, r * h : (r + 1) * h, c * w : (c + 1) * w] = frame[:h, :w, :3]
    return out


def render(ctx: UIContext) -> None:
    """Build the tab and wire its events."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, GENERATION_MODELS))
    gr.Markdown("Compare one shot under 2–4 settings. The clip is the one picked in *Clip Library* (or upload one in *Motion Structure* first).")
    with gr.Row():
        with gr.Column():
            source = gr.Markdown("No clip picked yet.", elem_id="compare-source")
            prompt = gr.Textbox(label="Prompt (use <name> for a character)", value="a red ball rolling across a meadow", elem_id="compare-prompt")
            concept = gr.Dropdown([], label="Character for the 'concept: yes' rows", allow_custom_value=True)
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0)
                frames = gr.Number(8 if config.tiny else 16, label="Frames (VACE: 4k+1)", precision=0)
                side = gr.Number(64 if config.tiny else 512, label="Size", precision=0)
                steps = gr.Number(2 if config.tiny else 25, label="Steps", precision=0)
            variants = gr.Dataframe(
                value=[[BACKENDS[0], 0.8, "no", DEFAULT_ESTIMATOR], [BACKENDS[0], 0.3, "no", DEFAULT_ESTIMATOR]],
                headers=VARIANT_COLUMNS, datatype=["str", "number", "str", "str"], type="array", interactive=True,
                column_count=(len(VARIANT_COLUMNS), "fixed"), row_count=(2, "dynamic"),
                label=f"Settings (2–{MAX_VARIANTS} rows; backend: {', '.join(BACKENDS)}; concept: yes/no; estimator: {', '.join(ESTIMATORS)})",
                elem_id="compare-variants",
            )
            with gr.Row():
                run_btn = gr.Button("Compare", variant="primary", elem_id="compare-run")
                cancel_btn = gr.Button("Cancel", variant="stop")
        with gr.Column():
            grid = gr.Video(label="Side by side (left to right, top to bottom = table order)", autoplay=True, loop=True, elem_id="compare-video")
            table = gr.Dataframe(headers=["#", "settings", "text match", "consistency", "depth adherence", "identity", "seconds"],
                                 type="array", interactive=False, label="Metrics", elem_id="compare-metrics")
            note = gr.Markdown()

    def show_clip(clip: Optional[dict[str, Any]]):
        return f"Clip: {clip['label']}" if clip else gr.skip()

    def depth_clip(clip: Optional[dict], ref: Optional[dict]) -> dict:
        if clip:
            return clip
        if ref:
            return {"path": ref["path"], "start": ref["start"], "end": ref["end"], "label": Path(ref["path"]).name}
        raise gr.Error("no clip yet: click a hit in Clip Library (or make a depth preview in Motion Structure) first")

    @action(config)
    def refresh_concepts(request: gr.Request):
        names = concept_names(ctx.session(request).weights_root)
        return gr.update(choices=names, value=names[0] if names else None)

    @action(config, gpu=True, duration=1200)
    def compare(clip: Optional[dict], ref: Optional[dict], text: str, name: Optional[str], seed_value: float, count: float,
                size: float, n_steps: float, rows: list, request: gr.Request, progress=gr.Progress()):
        from aas_core.concepts import load_concept
        from aas_core.depth import depth_from_clip, load_estimator
        from aas_core.generate import ShotSpec, generate
        from aas_core.metrics import shot_metrics
        from aas_core.video_io import write_video

        session = ctx.session(request)
        rows = [r for r in rows or [] if r and str(r[0]).strip()]
        if not 2 <= len(rows) <= MAX_VARIANTS:
            raise gr.Error(f"give 2 to {MAX_VARIANTS} settings rows ({len(rows)} given)")
        source_clip = depth_clip(clip, ref)
        token = session.new_job()
        outs, table_rows, started = [], [], time.perf_counter()
        for k, (backend, strength, use_concept, estimator) in enumerate(r[:4] for r in rows):
            began = time.perf_counter()
            share = lambda f, m, k=k: progress_fn(progress)((k + f) / len(rows), f"[{k + 1}/{len(rows)}] {m}")  # noqa: E731
            with_concept = str(use_concept).strip().lower() in ("yes", "y", "true", "1")
            concepts, shot_prompt = [], text
            if with_concept:
                if not name:
                    raise gr.Error(f"row {k + 1} asks for a concept: train or import one in Characters and pick it above")
                c = load_concept(name, session.weights_root)
                concepts = [c]
                shot_prompt = text if f"<{name}>" in text else f"<{name}> {text}"
            spec = ShotSpec(prompt=shot_prompt, backend=str(backend).strip(), strength=float(strength), frames=int(count),
                            width=int(size), height=int(size), steps=int(n_steps), seed=int(seed_value))
            depth = depth_from_clip(source_clip["path"], start=source_clip["start"], end=source_clip["end"], frames=int(count),
                                    size=(int(size), int(size)), estimator=str(estimator).strip(), weights_root=config.weights_root,
                                    cache_dir=session.depth_cache, on_progress=lambda f, m: share(0.2 * f, m), cancel=token)
            result = generate(spec, depth, concepts=concepts, on_progress=lambda f, m: share(0.2 + 0.7 * f, m), cancel=token,
                              weights_root=config.weights_root, out_dir=session.outputs / "compare")
            share(0.9, "metrics")
            photos = [np.asarray(img) for c in concepts for img in c.reference_images()]
            metrics = shot_metrics(result.frames, shot_prompt, condition_depth=depth.frames,
                                   depth_estimate=load_estimator(depth.estimator, config.weights_root).predict,
                                   depth_model=depth.estimator, concept_photos=photos, weights_root=config.weights_root)
            outs.append(result.frames)
            fmt = lambda v: "-" if v is None else round(float(v), 4)  # noqa: E731
            table_rows.append([k + 1, f"{backend}, strength {float(strength):g}, concept {'yes' if with_concept else 'no'}, {estimator}",
                               fmt(metrics.clip_text_similarity), fmt(metrics.frame_consistency), fmt(metrics.depth_adherence),
                               fmt(metrics.character_identity), round(time.perf_counter() - began, 1)])
        size_hw = outs[0].shape[1:3]
        if any(o.shape[1:3] != size_hw for o in outs):
            raise gr.Error("the settings made shots of different sizes; keep one size for a side-by-side grid")
        path = write_video(session.outputs / "compare" / f"grid-{int(time.time() * 1000)}.mp4", grid_frames(outs), float(spec.fps))
        text_note = f"{len(outs)} settings in {time.perf_counter() - started:.1f} s, same seed {int(seed_value)}."
        if config.tiny:
            text_note += " *Tiny random models: a workflow preview, not a real comparison.*"
        return str(path), table_rows, text_note

    ctx.selected_clip.change(show_clip, ctx.selected_clip, source, api_name=False)
    run_btn.click(compare, [ctx.selected_clip, ctx.depth_ref, prompt, concept, seed, frames, side, steps, variants],
                       [grid, table, note], concurrency_id=GPU_QUEUE, api_name="compare")
    cancel_btn.click(ctx.cancel, None, None, queue=False, api_name=False)
    ctx.concepts_changed.change(refresh_concepts, None, concept, api_name=False)
    ctx.loaders.append((refresh_concepts, [concept]))
    ctx.refreshers.append((notice, lambda: missing_weights(config, GENERATION_MODELS)))
