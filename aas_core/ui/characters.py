"""Characters tab: train a concept from photos with live loss and validation images; saved characters; import TI/LoRA."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from aas_core.errors import InputError
from aas_core.ui.common import IMAGE_TYPES, UIContext, files_of, missing_weights, store_uploads, wire_job
from aas_core.ui.samples import CREDIT, SAMPLE_CHARACTER, sample_photos

BASE_MODEL = "sd15"
LOSS_IN_MESSAGE = re.compile(r"step (\d+)/\d+ loss ([-+0-9.eE]+)")
"""train_concept reports 'step N/M loss X'; the UI plots what it reports."""
IMPORT_KINDS = ("textual inversion", "LoRA")
INSTANT, TRAINED = "Use instantly (IP-Adapter, seconds)", "Train for best identity (TimeInv, slower)"
METHODS = {INSTANT: "ip-adapter", TRAINED: "timeinv"}
"""The character methods offered, label -> `aas_core.concepts` method."""


def concept_gallery(root: Path, placeholder: str) -> list[tuple[str, str]]:
    """(thumbnail, caption) of every saved concept (a grey square for imported ones without photos)."""
    from aas_core.concepts import list_concepts

    items = []
    for c in list_concepts(root):
        thumb = next((str(c.folder / t) for t in c.thumbnails if (c.folder / t).is_file()), None) if c.folder else None
        steps = c.settings.get("steps")
        caption = f"<{c.name}> · {c.class_word or '-'} · {c.source}" + (f" · {steps} steps" if steps else "") + (" · tiny" if c.tiny else "")
        items.append((thumb or placeholder, caption))
    return items


def _placeholder(session: Any) -> str:
    """A grey square in the visitor's own outputs (served like any output)."""
    path = session.outputs / "concept.png"
    if not path.is_file():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (120, 120, 120)).save(path)
    return str(path)


def concept_names(root: Path) -> list[str]:
    """Names of the saved concepts."""
    from aas_core.concepts import list_concepts

    return [c.name for c in list_concepts(root)]


def _check_name(ctx: UIContext, session: Any, name: str, overwrite: bool) -> str:
    name = (name or "").strip()
    if not name:
        raise InputError("give the character a name (it becomes the prompt token <name>)")
    if name in concept_names(session.weights_root) and not overwrite:
        raise InputError(f"a character named <{name}> already exists: tick 'Overwrite an existing character' to replace it, "
                         "or choose another name")
    return name


def fill_sample(ctx: UIContext):
    """The sample character: three stills of the film's rabbit."""
    return sample_photos(), *SAMPLE_CHARACTER


def refresh(ctx: UIContext, request: gr.Request):
    """The visitor's saved characters."""
    session = ctx.session(request)
    return concept_gallery(session.weights_root, _placeholder(session))


def train(ctx: UIContext, files: Any, concept: str, word: str, n_steps: float, every: float, with_lora: bool, overwrite: bool,
          how: str, request: gr.Request, progress=gr.Progress()):
    """Make a character: instantly from the photos (IP-Adapter), or trained (loss plot and validation images live)."""
    import pandas as pd

    from aas_core.concepts import TrainSettings, train_concept
    from aas_core.concepts.store import training_dir

    config = ctx.config
    session = ctx.session(request)
    paths = files_of(files)
    if not config.min_photos <= len(paths) <= config.max_photos:
        raise InputError(f"give {config.min_photos} to {config.max_photos} photos of the character ({len(paths)} given)")
    concept = _check_name(ctx, session, concept, overwrite)
    photos = [str(p) for p in store_uploads(ctx, session, "photos", files)]
    if METHODS.get(how, "timeinv") == "ip-adapter":
        from aas_core.concepts.ip_adapter import make_ip_concept

        progress(0.1, desc=f"encoding the photos of <{concept}>")
        made = make_ip_concept(concept, word or "", photos, root=session.weights_root, overwrite=bool(overwrite))
        text = f"Saved **`<{made.name}>`** ({made.class_word}) from {len(photos)} photos, ready at once. Use `<{made.name}>` in prompts."
        if made.tiny:
            text += " *(tiny random model: a workflow preview)*"
        yield text, gr.skip(), gr.skip(), concept_gallery(session.weights_root, _placeholder(session)), time.time()
        return
    tiny_extra = {"resolution": 64, "batch_size": 1, "validation_inference_steps": 2} if config.tiny else {}
    settings = TrainSettings(steps=int(n_steps), validate_every=int(every), lora=bool(with_lora), **tiny_extra)
    token = session.new_job("train", config.job_time_limit_s)
    state: dict[str, Any] = {"fraction": 0.0, "message": "starting", "losses": [], "result": None, "error": None}
    began = time.monotonic()

    def on_progress(fraction: float, message: str) -> None:
        state["fraction"], state["message"] = fraction, message
        match = LOSS_IN_MESSAGE.search(message)
        if match:
            state["losses"].append((int(match.group(1)), float(match.group(2))))

    def work() -> None:
        try:
            state["result"] = train_concept(concept, word or "", photos, settings, root=session.weights_root, base_model=BASE_MODEL,
                                            overwrite=bool(overwrite), on_progress=on_progress, cancel=token)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the request thread below
            state["error"] = exc

    from aas_core.ui.common import time_left

    worker = threading.Thread(target=work, name=f"train-{concept}", daemon=True)
    worker.start()
    shown = -1
    while worker.is_alive() or shown < len(state["losses"]):
        worker.join(0.5)
        left = time_left(time.monotonic() - began, state["fraction"])
        progress(state["fraction"], desc=" · ".join(p for p in (f"training <{concept}>", state["message"], left) if p))
        if len(state["losses"]) != shown or not worker.is_alive():
            shown = len(state["losses"])
            # Never send an empty (object-typed) frame: the plot would keep treating loss as a category.
            frame = pd.DataFrame(state["losses"], columns=["step", "loss"]).astype({"step": int, "loss": float}) if state["losses"] else gr.skip()
            folder = training_dir(concept, session.weights_root) / "validation"
            images = sorted(str(p) for p in folder.glob("step_*.png")) if folder.is_dir() else []
            yield f"Training <{concept}>: {state['message']}", frame, images or gr.skip(), gr.skip(), gr.skip()
        if not worker.is_alive():
            break
    if state["error"] is not None:
        raise state["error"]
    result = state["result"]
    c = result.concept
    images = [str(c.folder / v) for v in c.validation]
    final = result.losses[-1] if result.losses else float("nan")
    text = f"Saved **`<{c.name}>`** ({c.class_word}) after {len(result.losses)} steps, final loss {final:.4f}. Use `<{c.name}>` in prompts."
    if c.tiny:
        text += " *(tiny random model: a workflow preview)*"
    yield text, gr.skip(), images, concept_gallery(session.weights_root, _placeholder(session)), time.time()


def show(ctx: UIContext, request: gr.Request, evt: gr.SelectData):
    """A clicked character's settings."""
    from aas_core.concepts import list_concepts

    c = list_concepts(ctx.session(request).weights_root)[evt.index]
    summary = c.summary()
    if ctx.config.multi_user and isinstance(summary, dict):
        summary = {k: v for k, v in summary.items() if k not in ("folder", "path")}
    return summary, c.name


def delete(ctx: UIContext, name_text: str, request: gr.Request):
    """Delete the selected character."""
    from aas_core.concepts import delete_concept

    if not name_text:
        raise InputError("click a character in the gallery first")
    session = ctx.session(request)
    delete_concept(name_text, session.weights_root)
    gr.Info(f"Deleted <{name_text}>")
    return concept_gallery(session.weights_root, _placeholder(session)), None, "", time.time()


def import_concept(ctx: UIContext, file: Any, kind: str, concept: str, word: str, trigger: str, overwrite: bool, request: gr.Request):
    """Import a textual-inversion or LoRA file as a character."""
    from aas_core.concepts import import_lora, import_textual_inversion

    session = ctx.session(request)
    if not files_of(file):
        raise InputError("choose a textual-inversion or LoRA file to import")
    name = _check_name(ctx, session, concept, overwrite)
    path = store_uploads(ctx, session, "imports", file)[0]
    if kind == "LoRA":
        c = import_lora(path, name, trigger=trigger or "", class_word=word or "", root=session.weights_root, overwrite=bool(overwrite))
    else:
        c = import_textual_inversion(path, name, class_word=word or "", root=session.weights_root, overwrite=bool(overwrite))
    gr.Info(f"Imported <{c.name}>")
    return concept_gallery(session.weights_root, _placeholder(session)), time.time()


@dataclass
class CharacterParts:
    """The tab's components."""

    photos: Any
    sample_btn: Any
    name: Any
    class_word: Any
    train_inputs: list[Any]
    train_btn: Any
    cancel_btn: Any
    status: Any
    loss_plot: Any
    validation: Any
    gallery: Any
    details: Any
    selected: Any
    delete_btn: Any
    import_inputs: list[Any]
    import_btn: Any


def render(ctx: UIContext) -> CharacterParts:
    """Build the tab's components."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, [BASE_MODEL]))
    ctx.refreshers.append((notice, lambda: missing_weights(config, [BASE_MODEL])))
    with gr.Row():
        with gr.Column(min_width=300):
            gr.Markdown(f"### Train a character from {config.min_photos}–{config.max_photos} photos")
            photos = gr.File(label="Photos", file_count="multiple", file_types=IMAGE_TYPES, elem_id="char-photos")
            sample_btn = gr.Button("Use the sample character photos", size="sm", elem_id="char-sample")
            with gr.Row():
                name = gr.Textbox(label="Name (prompt token <name>)", placeholder="alice", elem_id="char-name", min_width=120)
                class_word = gr.Textbox(label="Class word", placeholder="woman, cat, robot…", elem_id="char-class", min_width=120)
            how = gr.Radio(list(METHODS), value=INSTANT, label="How", elem_id="char-how")
            with gr.Row():
                steps = gr.Number(4 if config.tiny else 1500, label="Steps", precision=0, minimum=1, elem_id="char-steps", min_width=80)
                validate_every = gr.Number(2 if config.tiny else 250, label="Validation image every N steps", precision=0, minimum=0, min_width=120)
            with gr.Row():
                lora = gr.Checkbox(False, label="Also train a small LoRA")
                overwrite = gr.Checkbox(False, label="Overwrite an existing character", elem_id="char-overwrite")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="char-train")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="char-cancel")
            status = gr.Markdown(elem_id="char-status")
        with gr.Column(min_width=300):
            loss_plot = gr.LinePlot(x="step", y="loss", label="Loss", height=220)
            validation = gr.Gallery(label="Validation images", columns=4, height=180, allow_preview=True, fit_columns=False)
    gr.Markdown("### Saved characters")
    gallery = gr.Gallery(label="Characters (click one for its settings)", columns=6, height=200, allow_preview=False,
                         object_fit="contain", fit_columns=False, elem_id="char-gallery")
    with gr.Row():
        details = gr.JSON(label="Settings")
        with gr.Column():
            selected = gr.Textbox(label="Selected character", interactive=False, elem_id="char-selected")
            delete_btn = gr.Button("Delete the selected character", variant="stop")
    with gr.Accordion("Import a textual-inversion or LoRA file", open=False):
        with gr.Row():
            import_file = gr.File(label="File (.safetensors, .bin, .pt)", file_types=[".safetensors", ".bin", ".pt"])
            with gr.Column():
                import_kind = gr.Radio(list(IMPORT_KINDS), value=IMPORT_KINDS[0], label="Kind")
                import_name = gr.Textbox(label="Name")
                import_class = gr.Textbox(label="Class word (optional)")
                import_trigger = gr.Textbox(label="LoRA trigger words")
                import_overwrite = gr.Checkbox(False, label="Overwrite an existing character")
                import_btn = gr.Button("Import")
    gr.Markdown(CREDIT, elem_classes=["credit"])
    return CharacterParts(photos, sample_btn, name, class_word, [photos, name, class_word, steps, validate_every, lora, overwrite, how],
                          train_btn, cancel_btn, status, loss_plot, validation, gallery, details, selected, delete_btn,
                          [import_file, import_kind, import_name, import_class, import_trigger, import_overwrite], import_btn)


def listen(ctx: UIContext, p: CharacterParts) -> None:
    """Wire the tab's events."""
    h = ctx.handler
    p.sample_btn.click(h(fill_sample, outputs=3), None, [p.photos, p.name, p.class_word], api_name=False)
    wire_job(p.train_btn.click, h(train, outputs=5, gpu=True, duration=1200), p.train_inputs,
             [p.status, p.loss_plot, p.validation, p.gallery, ctx.concepts_changed], buttons=[p.train_btn, p.import_btn],
             status=p.status, api_name="train")
    p.cancel_btn.click(ctx.cancel, None, None, api_name=False, concurrency_limit=None)
    p.gallery.select(h(show, outputs=2), None, [p.details, p.selected], api_name=False)
    p.delete_btn.click(h(delete, outputs=4), [p.selected], [p.gallery, p.details, p.selected, ctx.concepts_changed], api_name="delete_concept")
    wire_job(p.import_btn.click, h(import_concept, outputs=2, gpu=True, duration=120), p.import_inputs, [p.gallery, ctx.concepts_changed],
             buttons=[p.train_btn, p.import_btn], api_name="import_concept")
    ctx.loaders.append((h(refresh, outputs=1), [p.gallery]))
