"""Characters tab: train a concept from photos with live loss and validation images; saved concepts; import TI/LoRA."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from aas_core.ui.common import GPU_QUEUE, IMAGE_TYPES, UIContext, action, files_of, missing_weights
from aas_core.ui.samples import sample_photos

BASE_MODEL = "sd15"
LOSS_IN_MESSAGE = re.compile(r"step (\d+)/\d+ loss ([-+0-9.eE]+)")
"""train_concept reports 'step N/M loss X'; the UI plots what it reports."""
IMPORT_KINDS = ("textual inversion", "LoRA")


def concept_gallery(root: Path, cache_dir: Path) -> list[tuple[str, str]]:
    """(thumbnail, caption) of every saved concept (a grey square for imported ones without photos)."""
    from aas_core.concepts import list_concepts

    items = []
    for c in list_concepts(root):
        thumb = next((str(c.folder / t) for t in c.thumbnails if (c.folder / t).is_file()), None) if c.folder else None
        steps = c.settings.get("steps")
        caption = f"<{c.name}> · {c.class_word or '-'} · {c.source}" + (f" · {steps} steps" if steps else "") + (" · tiny" if c.tiny else "")
        items.append((thumb or _placeholder(cache_dir), caption))
    return items


def _placeholder(cache_dir: Path) -> str:
    path = cache_dir / "concept.png"
    if not path.is_file():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (120, 120, 120)).save(path)
    return str(path)


def concept_names(root: Path) -> list[str]:
    """Names of the saved concepts."""
    from aas_core.concepts import list_concepts

    return [c.name for c in list_concepts(root)]


def render(ctx: UIContext) -> None:
    """Build the tab and wire its events."""
    config = ctx.config
    notice = gr.Markdown(missing_weights(config, [BASE_MODEL]))
    with gr.Row():
        with gr.Column():
            gr.Markdown(f"### Train a character from {config.min_photos}–{config.max_photos} photos")
            photos = gr.File(label="Photos", file_count="multiple", file_types=IMAGE_TYPES, elem_id="char-photos")
            sample_btn = gr.Button("Use the sample character photos", size="sm", elem_id="char-sample")
            with gr.Row():
                name = gr.Textbox(label="Name (prompt token <name>)", placeholder="alice", elem_id="char-name")
                class_word = gr.Textbox(label="Class word", placeholder="woman, cat, robot…", elem_id="char-class")
            with gr.Row():
                steps = gr.Number(4 if config.tiny else 1500, label="Steps", precision=0, minimum=1, elem_id="char-steps")
                validate_every = gr.Number(2 if config.tiny else 250, label="Validation image every N steps", precision=0, minimum=0)
                lora = gr.Checkbox(False, label="Also train a small LoRA")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="char-train")
                cancel_btn = gr.Button("Cancel", variant="stop")
            status = gr.Markdown(elem_id="char-status")
        with gr.Column():
            loss_plot = gr.LinePlot(x="step", y="loss", label="Loss", height=220)
            validation = gr.Gallery(label="Validation images", columns=4, height=180, allow_preview=True)
    gr.Markdown("### Saved characters")
    gallery = gr.Gallery(label="Concepts (click one for its settings)", columns=6, height=200, allow_preview=False,
                         object_fit="contain", fit_columns=False, elem_id="char-gallery")
    with gr.Row():
        details = gr.JSON(label="Settings", visible=True)
        with gr.Column():
            selected = gr.Textbox(label="Selected concept", interactive=False, elem_id="char-selected")
            delete_btn = gr.Button("Delete the selected concept", variant="stop")
    with gr.Accordion("Import a textual-inversion or LoRA file", open=False):
        with gr.Row():
            import_file = gr.File(label="File (.safetensors, .bin, .pt)", file_types=[".safetensors", ".bin", ".pt"])
            with gr.Column():
                import_kind = gr.Radio(list(IMPORT_KINDS), value=IMPORT_KINDS[0], label="Kind")
                import_name = gr.Textbox(label="Name")
                import_class = gr.Textbox(label="Class word (optional)")
                import_trigger = gr.Textbox(label="LoRA trigger words")
                import_btn = gr.Button("Import")

    # The example fills the photo list and the fields (gr.Examples cannot target a multi-file input directly).
    def fill_sample():
        return sample_photos(config.cache_dir), "hero", "boy"

    sample_btn.click(fill_sample, None, [photos, name, class_word], api_name=False)

    @action(config)
    def refresh(request: gr.Request):
        return concept_gallery(ctx.session(request).weights_root, config.cache_dir)

    @action(config, gpu=True, duration=1200)
    def train(files: Any, concept: str, word: str, n_steps: float, every: float, with_lora: bool, request: gr.Request,
              progress=gr.Progress()):
        import pandas as pd

        from aas_core.concepts import TrainSettings, train_concept
        from aas_core.concepts.store import training_dir

        session = ctx.session(request)
        paths = files_of(files)
        if not config.min_photos <= len(paths) <= config.max_photos:
            raise gr.Error(f"give {config.min_photos} to {config.max_photos} photos of the character ({len(paths)} given)")
        concept = (concept or "").strip()
        tiny_extra = {"resolution": 64, "batch_size": 1, "validation_inference_steps": 2} if config.tiny else {}
        settings = TrainSettings(steps=int(n_steps), validate_every=int(every), lora=bool(with_lora), **tiny_extra)
        token = session.new_job()
        state: dict[str, Any] = {"fraction": 0.0, "message": "starting", "losses": [], "result": None, "error": None}

        def on_progress(fraction: float, message: str) -> None:
            state["fraction"], state["message"] = fraction, message
            match = LOSS_IN_MESSAGE.search(message)
            if match:
                state["losses"].append((int(match.group(1)), float(match.group(2))))

        def work() -> None:
            try:
                state["result"] = train_concept(concept, word or "", paths, settings, root=session.weights_root,
                                                base_model=BASE_MODEL, on_progress=on_progress, cancel=token)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the request thread below
                state["error"] = exc

        worker = threading.Thread(target=work, name=f"train-{concept}", daemon=True)
        worker.start()
        shown = -1
        while worker.is_alive() or shown < len(state["losses"]):
            worker.join(0.5)
            progress(state["fraction"], desc=state["message"])
            if len(state["losses"]) != shown or not worker.is_alive():
                shown = len(state["losses"])
                # Never send an empty (object-typed) frame: the plot would keep treating loss as a category.
                frame = pd.DataFrame(state["losses"], columns=["step", "loss"]).astype({"step": int, "loss": float}) if state["losses"] else gr.skip()
                folder = training_dir(concept, session.weights_root) / "validation" if concept else None
                images = sorted(str(p) for p in folder.glob("step_*.png")) if folder and folder.is_dir() else []
                yield state["message"], frame, images or gr.skip(), gr.skip(), gr.skip()
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
        yield text, gr.skip(), images, concept_gallery(session.weights_root, config.cache_dir), time.time()

    @action(config)
    def show(request: gr.Request, evt: gr.SelectData):
        from aas_core.concepts import list_concepts

        concepts = list_concepts(ctx.session(request).weights_root)
        c = concepts[evt.index]
        return c.summary(), c.name

    @action(config)
    def delete(name_text: str, request: gr.Request):
        from aas_core.concepts import delete_concept

        if not name_text:
            raise gr.Error("click a concept in the gallery first")
        session = ctx.session(request)
        delete_concept(name_text, session.weights_root)
        gr.Info(f"Deleted <{name_text}>")
        return concept_gallery(session.weights_root, config.cache_dir), None, "", time.time()

    @action(config, gpu=True, duration=120)
    def import_concept(file: Any, kind: str, concept: str, word: str, trigger: str, request: gr.Request):
        from aas_core.concepts import import_lora, import_textual_inversion

        session = ctx.session(request)
        paths = files_of(file)
        if not paths:
            raise gr.Error("choose a textual-inversion or LoRA file to import")
        if kind == "LoRA":
            c = import_lora(paths[0], (concept or "").strip(), trigger=trigger or "", class_word=word or "", root=session.weights_root)
        else:
            c = import_textual_inversion(paths[0], (concept or "").strip(), class_word=word or "", root=session.weights_root)
        gr.Info(f"Imported <{c.name}>")
        return concept_gallery(session.weights_root, config.cache_dir), time.time()

    train_btn.click(train, [photos, name, class_word, steps, validate_every, lora],
                         [status, loss_plot, validation, gallery, ctx.concepts_changed], concurrency_id=GPU_QUEUE, api_name="train")
    cancel_btn.click(ctx.cancel, None, None, queue=False, api_name=False)
    gallery.select(show, None, [details, selected], api_name=False)
    delete_btn.click(delete, [selected], [gallery, details, selected, ctx.concepts_changed], api_name="delete_concept")
    import_btn.click(import_concept, [import_file, import_kind, import_name, import_class, import_trigger],
                     [gallery, ctx.concepts_changed], concurrency_id=GPU_QUEUE, api_name="import_concept")
    ctx.loaders.append((refresh, [gallery]))
    ctx.refreshers.append((notice, lambda: missing_weights(config, [BASE_MODEL])))
