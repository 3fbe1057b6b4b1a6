"""Motion Structure tab: a hit, an upload or a sample, trimmed/retimed/reframed, to "source | depth" and flicker figures.

The settings tuned here can be sent to a shot of the Story (the depth reference state carries them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.depth import DEFAULT_ESTIMATOR, DEFAULT_SMOOTHING, ESTIMATORS, FIT_MODES
from aas_core.errors import InputError
from aas_core.ui.common import VIDEO_TYPES, UIContext, fetch_web_clip, missing_weights, progress_fn, store_uploads, wire_job


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


def show_clip(ctx: UIContext, clip: Optional[dict[str, Any]]):
    """A clip picked in the library fills the source line and span."""
    if not clip:
        return gr.skip(), gr.skip(), gr.skip()
    return f"Source: {clip['label']}", clip["start"], clip["end"]


def extract(ctx: UIContext, clip: Optional[dict], uploaded: Any, t0: Optional[float], t1: Optional[float], rate: float, fit_mode: str,
            w: float, h: float, count: float, model: str, sigma: float, request: gr.Request, progress=gr.Progress()):
    """Depth of the uploaded clip (or the library pick): side-by-side video, contact sheet, flicker, and a reference."""
    from aas_core.depth import depth_from_clip, write_previews

    session = ctx.session(request)
    if uploaded:
        path = store_uploads(ctx, session, "depth", uploaded)[0]
    elif clip:
        if clip.get("url") and not Path(clip["path"]).is_file():
            # Its download was removed (a cleared cache, a restored session): fetched again.
            clip = {**clip, "path": fetch_web_clip(ctx, session, {"path": clip["url"], "start": clip["start"], "end": clip["end"], "remote": True})["path"]}
        path = ctx.resolve(session, clip["path"])  # a fetched web clip lies in the visitor's library folder
    else:
        raise InputError("no clip yet: click a hit in Clip Library or upload a clip above")
    depth = depth_from_clip(
        path, start=t0 if t0 not in (None, "") else None, end=t1 or None, frames=int(count), size=(int(w), int(h)),
        speed=float(rate), fit=fit_mode, estimator=model, smoothing=float(sigma), weights_root=ctx.config.weights_root,
        cache_dir=session.depth_cache, on_progress=progress_fn(progress, "depth"),
        cancel=session.new_job("depth", ctx.config.job_time_limit_s),
    )
    folder = session.outputs / "depth" / depth.stats["cache_key"][:20]
    written = write_previews(depth, folder)
    depth.save(folder)
    ref = {"path": str(path), "start": depth.span[0], "end": depth.span[1], "estimator": model, "fit": fit_mode,
           "speed": float(rate), "smoothing": float(sigma), "frames": int(count), "size": [int(w), int(h)],
           "label": clip["label"] if clip and not uploaded else Path(path).name}
    return str(written.get("side_by_side", written["depth"])), str(written["contact_sheet"]), flicker_markdown(depth), ref


@dataclass
class DepthParts:
    """The tab's components."""

    source: Any
    upload: Any
    inputs: list[Any]
    run_btn: Any
    cancel_btn: Any
    side: Any
    sheet: Any
    figures: Any
    start: Any
    end: Any


def render(ctx: UIContext) -> DepthParts:
    """Build the tab's components."""
    config = ctx.config
    size = 64 if config.tiny else 512
    notice = gr.Markdown(missing_weights(config, [DEFAULT_ESTIMATOR]))
    ctx.refreshers.append((notice, lambda: missing_weights(config, [DEFAULT_ESTIMATOR])))
    with gr.Row():
        with gr.Column(min_width=300):
            source = gr.Markdown("Pick a hit in *Clip Library*, or upload a clip here.", elem_id="depth-source")
            upload = gr.File(label="…or upload a clip", file_types=VIDEO_TYPES, elem_id="depth-upload")
            with gr.Row():
                start = gr.Number(None, label="Start (s)", minimum=0, elem_id="depth-start", min_width=80)
                end = gr.Number(None, label="End (s)", minimum=0, elem_id="depth-end", min_width=80)
                speed = gr.Slider(0.25, 4.0, value=1.0, step=0.25, label="Speed (retime)", min_width=140)
            with gr.Row():
                fit = gr.Dropdown(list(FIT_MODES), value="crop", label="Reframe", min_width=90)
                width = gr.Number(size, label="Width", precision=0, minimum=32, min_width=70)
                height = gr.Number(size, label="Height", precision=0, minimum=32, min_width=70)
                frames = gr.Number(8 if config.tiny else 16, label="Frames", precision=0, minimum=1, min_width=70)
            with gr.Row():
                estimator = gr.Dropdown(list(ESTIMATORS), value=DEFAULT_ESTIMATOR, label="Depth estimator", min_width=140)
                smoothing = gr.Slider(0.0, 4.0, value=DEFAULT_SMOOTHING, step=0.25, label="Temporal smoothing (frames)", min_width=140)
            with gr.Row():
                run_btn = gr.Button("Extract depth", variant="primary", elem_id="depth-run")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="depth-cancel")
            gr.Markdown("These settings go to a shot with *Use Motion Structure settings* in the Story tab.")
        with gr.Column(min_width=300):
            side = gr.Video(label="source | depth", autoplay=True, loop=True, elem_id="depth-video")
            sheet = gr.Image(label="Contact sheet", type="filepath", height=200)
            figures = gr.Markdown(elem_id="depth-flicker")
    return DepthParts(source, upload, [start, end, speed, fit, width, height, frames, estimator, smoothing], run_btn, cancel_btn,
                      side, sheet, figures, start, end)


def listen(ctx: UIContext, p: DepthParts) -> None:
    """Wire the tab's events."""
    ctx.selected_clip.change(ctx.handler(show_clip, outputs=3), ctx.selected_clip, [p.source, p.start, p.end], api_name=False)
    wire_job(p.run_btn.click, ctx.handler(extract, outputs=4, gpu=True, duration=300), [ctx.selected_clip, p.upload, *p.inputs],
             [p.side, p.sheet, p.figures, ctx.depth_ref], buttons=[p.run_btn], status=p.figures, api_name="depth")
    p.cancel_btn.click(ctx.cancel, None, None, api_name=False, concurrency_limit=None)
