"""Clip Library tab: index uploaded clips, the samples or (locally) a folder; search by text or image; pick a hit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.errors import InputError
from aas_core.library import CLIP_MODELS
from aas_core.library.captions import url_name
from aas_core.limits import MAX_QUERY_CHARS
from aas_core.registry import DEFAULT_CLIP
from aas_core.ui.common import (
    VIDEO_TYPES,
    UIContext,
    fetch_web_clip,
    hit_details,
    missing_weights,
    progress_fn,
    search_library,
    store_uploads,
    web_clip_thumbnail,
    wire_job,
    with_thumbnails,
)
from aas_core.ui.samples import CREDIT, sample_clips

EXAMPLE_QUERIES = ["a rabbit comes out of its burrow", "a big rabbit stretches", "a rabbit yawns"]


def hit_label(hit: dict[str, Any]) -> str:
    """Gallery caption of a search hit: rank, score, span, file name (a web clip's own); motion and caption when known."""
    details = hit_details(hit)
    return (f"#{hit['rank']} · score {hit['score']:.3f} · {hit['start']:.1f}–{hit['end']:.1f} s · {clip_name(hit)}"
            + (f" · {details}" if details else ""))


def clip_name(hit: dict[str, Any]) -> str:
    """A hit's file name: a web clip's name in its URL (also once downloaded under a hash name)."""
    url = hit.get("url") or (hit["path"] if hit.get("remote") else "")
    return url_name(url) if url else Path(hit["path"]).name


def hits_markdown(hits: list[dict[str, Any]], note: str = "") -> str:
    """The hits as a table: rank, score, span, file name, motion and caption."""
    if not hits:
        return (note + "\n\n" if note else "") + "No shot matched; index more clips or lower the shortest-shot limit."
    rows = [f"| {h['rank']} | {h['score']:.3f} | {h['start']:.2f}–{h['end']:.2f} s | {Path(h['path']).name} | "
            f"{hit_details(h).replace('|', '/')} |" for h in hits]
    return (note + "\n\n" if note else "") + "| # | score | span | clip | motion, caption |\n|---|---|---|---|---|\n" + "\n".join(rows)


def summary_markdown(summary: Any) -> str:
    """What an indexing run did: 'indexed N, skipped M (reasons)' and the library's size."""
    skipped = summary.skipped
    line = f"Indexed **{summary.files_indexed}** new or changed files"
    if skipped:
        reasons = sorted({s["reason"].split(":")[0] for s in skipped})
        line += f", skipped **{len(skipped)}** ({'; '.join(reasons)})"
    line += (f"; reused {summary.files_reused}, dropped {summary.files_removed}. The library now holds **{summary.shots} shots** "
             f"({summary.model}, {summary.index_type} index).")
    lines = [line]
    if skipped:
        lines.append("\n| skipped file | reason |\n|---|---|")
        lines += [f"| {Path(s['path']).name} | {s['reason']} |" for s in skipped]
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


def index(ctx: UIContext, files: Any, folder_text: str, model_name: str, request: gr.Request, progress=gr.Progress()) -> str:
    """Index uploaded clips (copied into the visitor's session) or, locally, a folder."""
    from aas_core.library import index_folder

    config = ctx.config
    session = ctx.session(request)
    if files:
        names = [Path(getattr(f, "name", f)).name for f in (files if isinstance(files, list) else [files])]
        if len(names) > config.max_clips:
            raise InputError(f"{len(names)} clips uploaded; at most {config.max_clips} at a time: index them in batches")
        bad = [n for n in names if Path(n).suffix.lower() not in VIDEO_TYPES]
        if bad:
            raise InputError(f"not a video file: {', '.join(bad)}; upload {', '.join(VIDEO_TYPES)} files")
        target = store_uploads(ctx, session, "clips", files)[0].parent
    elif folder_text and folder_text.strip():
        if config.multi_user:
            raise InputError("indexing a folder of the server is off in this shared app; upload clips instead")
        target = Path(folder_text.strip()).expanduser()
        if not target.is_dir():
            raise InputError(f"{target} is not a folder on this machine; type an existing folder or upload clips")
    else:
        raise InputError("upload some clips (or click 'Add the sample clips')" + ("" if config.multi_user else ", or type a folder to index"))
    result = index_folder(target, library=session.library, model=model_name, weights_root=config.weights_root,
                          on_progress=progress_fn(progress, "indexing"), cancel=session.new_job("index", config.job_time_limit_s))
    return summary_markdown(result)


def add_samples(ctx: UIContext, model_name: str, request: gr.Request, progress=gr.Progress()) -> str:
    """Index the three Big Buck Bunny sample cuts."""
    from aas_core.library import index_folder

    session = ctx.session(request)
    result = index_folder(sample_clips(), library=session.library, model=model_name, weights_root=ctx.config.weights_root,
                          on_progress=progress_fn(progress, "indexing the samples"),
                          cancel=session.new_job("index", ctx.config.job_time_limit_s))
    return summary_markdown(result)


def search(ctx: UIContext, text: str, image_path: Optional[str], count: float, shortest: Optional[float], request: gr.Request):
    """Search by text or image; a new search clears the previous pick (and says which input it used)."""
    session = ctx.session(request)
    text = (text or "").strip()
    if not text and not image_path:
        raise InputError("type what happens in the shot, or give an example image")
    note = "Searched by the **image** (the text is ignored when an image is given; clear the image to search by text)." \
        if text and image_path else ""
    hits = search_library(ctx, session, text if not image_path else None, k=int(count), image=image_path,
                          min_duration=float(shortest or 0.0))
    found = [h.to_dict() for h in hits]
    shown = with_thumbnails(found, web_clip_thumbnail(session))
    return shown, [(h["thumbnail"], hit_label(h)) for h in shown], hits_markdown(found, note), None, "No clip selected yet.", None


def pick(ctx: UIContext, hits: list[dict[str, Any]], request: gr.Request, evt: gr.SelectData):
    """A clicked hit plays and becomes the clip of Motion Structure, Compare and the Story's 'use' button.

    A web clip (captioned URL) is downloaded first, once, into the visitor's library (its remote-cache)."""
    hit = hits[evt.index]
    session = ctx.session(request)
    hit = fetch_web_clip(ctx, session, hit)
    clip = {"path": hit["path"], "start": hit["start"], "end": hit["end"], "label": hit_label(hit), "url": hit.get("url", "")}
    fetched = f" Downloaded from {hit['url']}." if hit.get("url") else ""
    text = (f"Selected **{clip_name(hit)}** {hit['start']:.2f}–{hit['end']:.2f} s (score {hit['score']:.3f}).{fetched} "
            "It is ready in *Motion Structure*, *Compare* and the Story's 'Use the Clip Library pick'.")
    return shot_preview(hit, session.outputs), text, clip


@dataclass
class LibraryParts:
    """The tab's components."""

    uploads: Any
    folder: Any
    model: Any
    index_btn: Any
    samples_btn: Any
    cancel_btn: Any
    summary: Any
    query: Any
    image: Any
    k: Any
    min_duration: Any
    search_btn: Any
    gallery: Any
    player: Any
    chosen: Any
    table: Any
    hits: Any


def render(ctx: UIContext) -> LibraryParts:
    """Build the tab's components."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, [DEFAULT_CLIP]))
    ctx.refreshers.append((notice, lambda: missing_weights(config, [DEFAULT_CLIP])))
    with gr.Row():
        with gr.Column(min_width=300):
            gr.Markdown("### Add clips")
            uploads = gr.File(label=f"Upload clips (up to {config.max_clips}, {', '.join(VIDEO_TYPES)})",
                              file_count="multiple", file_types=VIDEO_TYPES, elem_id="library-upload")
            folder = gr.Textbox(label="…or index a folder on this machine", placeholder="/path/to/stock/footage",
                                visible=not config.multi_user, elem_id="library-folder")
            model = gr.Dropdown(list(CLIP_MODELS), value=DEFAULT_CLIP, label="Embedding model")
            with gr.Row():
                index_btn = gr.Button("Index", variant="primary", elem_id="library-index", min_width=90)
                samples_btn = gr.Button("Add the sample clips", elem_id="library-samples", min_width=150)
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="library-cancel", min_width=80)
            summary = gr.Markdown(elem_id="library-summary")
        with gr.Column(min_width=300):
            gr.Markdown("### Search")
            query = gr.Textbox(label="What happens in the shot", placeholder="a man walks a dog in a park", elem_id="library-query",
                               max_length=MAX_QUERY_CHARS)
            gr.Examples(EXAMPLE_QUERIES, inputs=query, label="Try")
            image = gr.Image(label="…or an example image", type="filepath", height=160, elem_id="library-image")
            with gr.Row():
                k = gr.Slider(1, 24, value=8, step=1, label="Results")
                min_duration = gr.Number(0.0, label="Shortest shot (s)", minimum=0)
            search_btn = gr.Button("Search", variant="primary", elem_id="library-search")
    gallery = gr.Gallery(label="Hits (click one to play it and use it in the next tabs)", columns=6, height=220,
                         allow_preview=False, object_fit="contain", fit_columns=False, elem_id="library-hits")
    with gr.Row():
        player = gr.Video(label="Shot", autoplay=True, height=260, elem_id="library-player", min_width=240)
        with gr.Column(min_width=240):
            chosen = gr.Markdown("No clip selected yet.", elem_id="library-chosen")
            table = gr.Markdown(elem_id="library-table")
    gr.Markdown(CREDIT, elem_classes=["credit"])
    return LibraryParts(uploads, folder, model, index_btn, samples_btn, cancel_btn, summary, query, image, k, min_duration,
                        search_btn, gallery, player, chosen, table, gr.State([]))


def listen(ctx: UIContext, p: LibraryParts) -> None:
    """Wire the tab's events."""
    h = ctx.handler
    run_buttons = [p.index_btn, p.samples_btn]
    wire_job(p.index_btn.click, h(index, outputs=1, gpu=True, duration=600), [p.uploads, p.folder, p.model], [p.summary],
             buttons=run_buttons, status=p.summary, api_name="index_clips")
    wire_job(p.samples_btn.click, h(add_samples, outputs=1, gpu=True, duration=300), [p.model], [p.summary],
             buttons=run_buttons, status=p.summary, api_name="index_samples")
    p.cancel_btn.click(ctx.cancel, None, None, api_name=False, concurrency_limit=None)
    outputs = [p.hits, p.gallery, p.table, p.player, p.chosen, ctx.selected_clip]
    wire_job(p.search_btn.click, h(search, outputs=6, gpu=True, duration=60), [p.query, p.image, p.k, p.min_duration], outputs,
             buttons=[p.search_btn], status=p.table, api_name="search")
    p.query.submit(h(search, outputs=6, gpu=True, duration=60), [p.query, p.image, p.k, p.min_duration], outputs, api_name=False,
                   concurrency_id="gpu", show_progress_on=[p.table])
    p.gallery.select(h(pick, outputs=3), [p.hits], [p.player, p.chosen, ctx.selected_clip], api_name=False)
