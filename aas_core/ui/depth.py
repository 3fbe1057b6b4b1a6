"""Motion Structure tab: a hit (or an uploaded clip), trimmed/retimed/reframed, to "source | depth" and flicker figures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.depth import DEFAULT_ESTIMATOR, DEFAULT_SMOOTHING, ESTIMATORS, FIT_MODES
from aas_core.ui.common import GPU_QUEUE, VIDEO_TYPES, UIContext, action, files_of, missing_weights, progress_fn


def flicker_markdown(depth: Any) -> str:
    """The flicker figures of a depth sequence beside the naive per-frame baseline."""
    stats = depth.stats
    base = stats.get("baseline_per_frame_minmax", {})
    rows = [
        "| | mean frame-to-frame change | relative to scene depth range |",
        "|---|---|---|",
        f"| this sequence ({depth.estimator}, one scale, smoothed) | {stats['flicker']:.4f} | {stats['relative_flicker']:.4f} |",
    ]
    if base:
        rows.append(f"| naive per-frame min-max | {base['flicker']:.4f} | {base['relative_flicker']:.4f} |")
    cached = " (from the depth cache)" if stats.get("cache_hit") else ""
    notes = "".join(f"\n\n⚠ {w}" for w in depth.warnings)
    return (
        f"**Flicker** (lower is steadier){cached}: {depth.num_frames} frames at {depth.size[0]}x{depth.size[1]}, "
        f"{depth.fps:.2f} fps, span {depth.span[0]:.2f}–{depth.span[1]:.2f} s\n\n" + "\n".join(rows) + notes
    )


def render(ctx: UIContext) -> None:
    """Build the tab and wire its events."""
    config = ctx.config
    size = 64 if config.tiny else 512
    notice = gr.Markdown(missing_weights(config, [DEFAULT_ESTIMATOR]))
    with gr.Row():
        with gr.Column():
            source = gr.Markdown("Pick a hit in *Clip Library*, or upload a clip here.", elem_id="depth-source")
            upload = gr.File(label="…or upload a clip", file_types=VIDEO_TYPES, elem_id="depth-upload")
            with gr.Row():
                start = gr.Number(None, label="Start (s)", minimum=0, elem_id="depth-start")
                end = gr.Number(None, label="End (s)", minimum=0, elem_id="depth-end")
                speed = gr.Slider(0.25, 4.0, value=1.0, step=0.25, label="Speed (retime)")
            with gr.Row():
                fit = gr.Dropdown(list(FIT_MODES), value="crop", label="Reframe")
                width = gr.Number(size, label="Width", precision=0, minimum=32)
                height = gr.Number(size, label="Height", precision=0, minimum=32)
                frames = gr.Number(8 if config.tiny else 16, label="Frames", precision=0, minimum=1)
            with gr.Row():
                estimator = gr.Dropdown(list(ESTIMATORS), value=DEFAULT_ESTIMATOR, label="Depth estimator")
                smoothing = gr.Slider(0.0, 4.0, value=DEFAULT_SMOOTHING, step=0.25, label="Temporal smoothing (frames)")
            with gr.Row():
                run_btn = gr.Button("Extract depth", variant="primary", elem_id="depth-run")
                cancel_btn = gr.Button("Cancel", variant="stop")
        with gr.Column():
            side = gr.Video(label="source | depth", autoplay=True, loop=True, elem_id="depth-video")
            sheet = gr.Image(label="Contact sheet", type="filepath", height=200)
            figures = gr.Markdown(elem_id="depth-flicker")

    def show_clip(clip: Optional[dict[str, Any]]):
        if not clip:
            return gr.skip(), gr.skip(), gr.skip()
        return f"Source: {clip['label']}", clip["start"], clip["end"]

    @action(config, gpu=True, duration=300)
    def extract(clip: Optional[dict], uploaded: Any, t0: Optional[float], t1: Optional[float], rate: float, fit_mode: str,
                w: float, h: float, count: float, model: str, sigma: float, request: gr.Request, progress=gr.Progress()):
        from aas_core.depth import depth_from_clip, write_previews

        session = ctx.session(request)
        files = files_of(uploaded)
        if files:
            target = session.upload_dir("depth") / Path(files[0]).name
            shutil.copy2(files[0], target)
            path = str(target)
        elif clip:
            path = clip["path"]
        else:
            raise gr.Error("no clip yet: click a hit in Clip Library or upload a clip above")
        depth = depth_from_clip(
            path, start=t0 if t0 not in (None, "") else None, end=t1 or None, frames=int(count), size=(int(w), int(h)),
            speed=float(rate), fit=fit_mode, estimator=model, smoothing=float(sigma), weights_root=config.weights_root,
            cache_dir=session.depth_cache,
            on_progress=progress_fn(progress), cancel=session.new_job(),
        )
        folder = session.outputs / "depth" / depth.stats["cache_key"][:20]
        written = write_previews(depth, folder)
        depth.save(folder)
        ref = {"folder": str(folder), "path": path, "start": depth.span[0], "end": depth.span[1], "estimator": model,
               "fit": fit_mode, "speed": float(rate), "smoothing": float(sigma), "frames": int(count), "size": [int(w), int(h)]}
        return str(written.get("side_by_side", written["depth"])), str(written["contact_sheet"]), flicker_markdown(depth), ref

    ctx.selected_clip.change(show_clip, ctx.selected_clip, [source, start, end], api_name=False)
    run_btn.click(extract, [ctx.selected_clip, upload, start, end, speed, fit, width, height, frames, estimator, smoothing],
                       [side, sheet, figures, ctx.depth_ref], concurrency_id=GPU_QUEUE, api_name="depth")
    cancel_btn.click(ctx.cancel, None, None, queue=False, api_name=False)
    ctx.refreshers.append((notice, lambda: missing_weights(config, [DEFAULT_ESTIMATOR])))
