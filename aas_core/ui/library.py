"""Clip Library tab: index a folder or uploaded clips, search by text or example image, play a hit."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.library import CLIP_MODELS
from aas_core.registry import DEFAULT_CLIP
from aas_core.ui.common import GPU_QUEUE, VIDEO_TYPES, UIContext, action, files_of, missing_weights, progress_fn
from aas_core.ui.samples import sample_clips

EXAMPLE_QUERIES = ["a red ball rolling to the right", "something rising into the sky", "a kite drifting left"]


def hit_label(hit: dict[str, Any]) -> str:
    """Gallery caption of a search hit: rank, score, span, file."""
    return f"#{hit['rank']} · score {hit['score']:.3f} · {hit['start']:.1f}–{hit['end']:.1f} s · {Path(hit['path']).name}"


def hits_markdown(hits: list[dict[str, Any]]) -> str:
    """The hits as a table: rank, score, span, file."""
    if not hits:
        return "No shot matched; index more clips or lower the shortest-shot limit."
    rows = [f"| {h['rank']} | {h['score']:.3f} | {h['start']:.2f}–{h['end']:.2f} s | {Path(h['path']).name} |" for h in hits]
    return "| # | score | span | clip |\n|---|---|---|---|\n" + "\n".join(rows)


def summary_markdown(summary: Any) -> str:
    """What an indexing run did, with the skipped files and why."""
    lines = [
        f"Indexed **{summary.files_indexed}** new or changed files, reused {summary.files_reused}, "
        f"dropped {summary.files_removed}; the library now holds **{summary.shots} shots** ({summary.model}, {summary.index_type} index)."
    ]
    if summary.skipped:
        lines.append("\n**Skipped files**\n\n| file | reason |\n|---|---|")
        lines += [f"| {Path(s['path']).name} | {s['reason']} |" for s in summary.skipped]
    return "\n".join(lines)


def shot_preview(hit: dict[str, Any], folder: Path) -> str:
    """Cut a hit's span into a small mp4 the browser can play (cached by path and span)."""
    from aas_core.video_io import iter_frames, write_video

    key = hashlib.sha1(f"{hit['path']}|{hit['start']}|{hit['end']}".encode()).hexdigest()[:16]
    out = folder / "previews" / f"{key}.mp4"
    if not out.is_file():
        frames = [f.rgb for f in iter_frames(hit["path"], hit["start"], hit["end"])]
        write_video(out, frames, hit.get("fps") or 8.0)
    return str(out)


def render(ctx: UIContext) -> None:
    """Build the tab and wire its events."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, [DEFAULT_CLIP]))
    hits_state = gr.State([])
    with gr.Row():
        with gr.Column():
            gr.Markdown("### 1. Add clips")
            uploads = gr.File(
                label=f"Upload clips (up to {config.max_clips}, {', '.join(VIDEO_TYPES)})",
                file_count="multiple", file_types=VIDEO_TYPES, elem_id="library-upload",
            )
            folder = gr.Textbox(
                label="…or index a folder on this machine", placeholder="/path/to/stock/footage",
                visible=not config.multi_user, elem_id="library-folder",
            )
            model = gr.Dropdown(list(CLIP_MODELS), value=DEFAULT_CLIP, label="Embedding model")
            with gr.Row():
                index_btn = gr.Button("Index", variant="primary", elem_id="library-index")
                samples_btn = gr.Button("Add the sample clips", elem_id="library-samples")
                cancel_btn = gr.Button("Cancel", variant="stop")
            summary = gr.Markdown(elem_id="library-summary")
        with gr.Column():
            gr.Markdown("### 2. Search")
            query = gr.Textbox(label="What happens in the shot", placeholder="a man walks a dog in a park", elem_id="library-query")
            gr.Examples(EXAMPLE_QUERIES, inputs=query, label="Try")
            image = gr.Image(label="…or an example image", type="filepath", height=160)
            with gr.Row():
                k = gr.Slider(1, 24, value=8, step=1, label="Results")
                min_duration = gr.Number(0.0, label="Shortest shot (s)", minimum=0)
            search_btn = gr.Button("Search", variant="primary", elem_id="library-search")
    gallery = gr.Gallery(label="Hits (click one to play it and use it in Motion Structure)", columns=6, height=220,
                         allow_preview=False, object_fit="contain", fit_columns=False, elem_id="library-hits")
    with gr.Row():
        player = gr.Video(label="Shot", autoplay=True, height=260, elem_id="library-player")
        with gr.Column():
            chosen = gr.Markdown("No clip selected yet.", elem_id="library-chosen")
            table = gr.Markdown(elem_id="library-table")

    @action(config, gpu=True, duration=600)
    def index(files: Any, folder_text: str, model_name: str, request: gr.Request, progress=gr.Progress()) -> str:
        from aas_core.library import index_folder

        session = ctx.session(request)
        paths = files_of(files)
        if paths:
            if len(paths) > config.max_clips:
                raise gr.Error(f"{len(paths)} clips uploaded; at most {config.max_clips} at a time: index them in batches")
            bad = [Path(p).name for p in paths if Path(p).suffix.lower() not in VIDEO_TYPES]
            if bad:
                raise gr.Error(f"not a video file: {', '.join(bad)}; upload {', '.join(VIDEO_TYPES)} files")
            target = session.upload_dir("clips")
            for p in paths:
                shutil.copy2(p, target / Path(p).name)
        elif folder_text and folder_text.strip():
            if config.multi_user:
                raise gr.Error("indexing a folder of the server is off in multi-user mode; upload clips instead")
            target = Path(folder_text.strip()).expanduser()
            if not target.is_dir():
                raise gr.Error(f"{target} is not a folder on this machine; type an existing folder or upload clips")
        else:
            raise gr.Error("upload some clips or type a folder to index (or click 'Add the sample clips')")
        result = index_folder(target, library=session.library, model=model_name, weights_root=config.weights_root,
                              on_progress=progress_fn(progress), cancel=session.new_job())
        return summary_markdown(result)

    @action(config, gpu=True, duration=300)
    def add_samples(model_name: str, request: gr.Request, progress=gr.Progress()) -> str:
        from aas_core.library import index_folder

        session = ctx.session(request)
        result = index_folder(sample_clips(config.cache_dir), library=session.library, model=model_name,
                              weights_root=config.weights_root, on_progress=progress_fn(progress), cancel=session.new_job())
        return summary_markdown(result)

    @action(config, gpu=True, duration=60)
    def search(text: str, image_path: Optional[str], count: float, shortest: Optional[float], request: gr.Request):
        from aas_core import library

        session = ctx.session(request)
        hits = library.search(text if not image_path else None, k=int(count), library=session.library, image=image_path,
                              min_duration=float(shortest or 0.0), weights_root=config.weights_root)
        found = [h.to_dict() for h in hits]
        return found, [(h["thumbnail"], hit_label(h)) for h in found], hits_markdown(found)

    @action(config)
    def pick(hits: list[dict[str, Any]], request: gr.Request, evt: gr.SelectData):
        hit = hits[evt.index]
        session = ctx.session(request)
        clip = {"path": hit["path"], "start": hit["start"], "end": hit["end"], "label": hit_label(hit)}
        text = f"Selected **{Path(hit['path']).name}** {hit['start']:.2f}–{hit['end']:.2f} s (score {hit['score']:.3f}). It is ready in *Motion Structure*."
        return shot_preview(hit, session.outputs), text, clip

    index_btn.click(index, [uploads, folder, model], summary, concurrency_id=GPU_QUEUE, api_name="index_clips")
    samples_btn.click(add_samples, [model], summary, concurrency_id=GPU_QUEUE, api_name="index_samples")
    cancel_btn.click(ctx.cancel, None, None, queue=False, api_name=False)
    search_args = dict(fn=search, inputs=[query, image, k, min_duration], outputs=[hits_state, gallery, table], concurrency_id=GPU_QUEUE)
    search_btn.click(**search_args, api_name="search")
    query.submit(**search_args, api_name=False)
    gallery.select(pick, [hits_state], [player, chosen, ctx.selected_clip], api_name=False)
    ctx.refreshers.append((notice, lambda: missing_weights(config, [DEFAULT_CLIP])))
