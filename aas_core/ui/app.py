"""The Blocks assembly: five numbered tabs over `aas_core`, a queue with GPU work at concurrency 1, per-visitor
sessions cleaned when a tab closes, when a plain-HTTP caller goes idle, and when the app stops."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from aas_core.ui import characters, compare, depth, library, story
from aas_core.ui.common import TITLE_PROGRESS_JS, UIContext
from aas_core.ui.config import AppConfig, tiny_label
from aas_core.ui.session import Sessions

TITLE = "Animate-A-Story"
TABS = (("1. Clip Library", "clip-library", library), ("2. Motion Structure", "motion-structure", depth),
        ("3. Characters", "characters", characters), ("4. Story", "story", story), ("5. Compare", "compare", compare))
"""In the order of the work: find motion, shape it, add characters, tell the story, then compare settings."""
CSS = """
.shot-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 6px; margin-bottom: 10px; }
.card-head p { margin: 2px 4px; font-size: 0.95em; }
.credit p { font-size: 0.8em; opacity: 0.75; }
@media (max-width: 480px) {
  .tab-wrapper button, [role=tab] { padding: 6px 8px; font-size: 0.85em; }
  .gradio-container { padding: 4px !important; }
}
.tab-container[role=tablist] { flex-wrap: wrap; overflow-x: auto; }
"""
"""Cards framed; tab buttons wrap on a phone so every tab stays reachable."""


def build_app(config: Optional[AppConfig] = None) -> gr.Blocks:
    """The whole app, not launched (tiny models are written after launch, or on the first action)."""
    config = config or AppConfig.from_env()
    sessions = Sessions(config)
    with gr.Blocks(title=TITLE, delete_cache=(1800, 6 * 3600)) as demo:
        gr.Markdown(f"# {TITLE}\nTurn a written story into a video: find clips whose motion fits each shot, "
                    "repaint them from a prompt that follows their depth, keep your characters consistent, stitch the story.")
        if config.tiny:
            gr.Markdown(tiny_label(config.multi_user), elem_id="tiny-banner")
        if config.multi_user:
            gr.Markdown(f"Your uploads, characters and outputs are private to this browser session and deleted when you leave "
                        f"(up to {config.quota_mb} MB and {config.quota_files} files; one job runs at most "
                        f"{config.job_time_limit_s // 60} minutes).", elem_id="privacy-note")
        ctx = UIContext(config=config, sessions=sessions, selected_clip=gr.State(None), depth_ref=gr.State(None),
                        concepts_changed=gr.State(0))
        built: list[tuple[Any, Any]] = []
        with gr.Tabs():
            for label, tab_id, module in TABS:
                with gr.Tab(label, id=tab_id, elem_id=f"tab-{tab_id}"):
                    built.append((module, module.render(ctx)))
        for module, parts in built:
            module.listen(ctx, parts)
        for fn, outputs in ctx.loaders:
            demo.load(fn, None, outputs, api_name=False)
        if ctx.refreshers:
            components = [component for component, _ in ctx.refreshers]
            demo.load(lambda: [fn() for _, fn in ctx.refreshers], None, components, api_name=False)

        def arrive(request: gr.Request) -> None:
            # A page was loaded: this session has a tab that says goodbye, so it gets the long idle time.
            sessions.get(request.session_hash, browser=True)

        def leave(request: gr.Request) -> None:
            sessions.close(request.session_hash)

        demo.load(arrive, None, None, api_name=False, js=TITLE_PROGRESS_JS, queue=False)
        demo.unload(leave)
    demo.aas_ctx = ctx  # type: ignore[attr-defined]
    demo.aas_config = config  # type: ignore[attr-defined]
    demo.aas_sessions = sessions  # type: ignore[attr-defined]
    return demo


def allowed_paths(config: AppConfig) -> list[str]:
    """Folders gradio may serve beyond its own upload/cache folder.

    Multi-user: only the public samples (every visitor's outputs reach the browser through gradio's cache, so
    no session folder, weights or concepts folder is ever served by path). Local: also the library,
    concepts and outputs the one user owns.
    """
    paths = [config.samples_dir]
    if not config.multi_user:
        from aas_core.library import default_library

        paths += [config.cache_dir, config.weights_root / "concepts", config.outputs.absolute(), config.library or default_library()]
    return [str(Path(p)) for p in paths]


def isolate_gradio_temp(config: AppConfig) -> Optional[Path]:
    """Multi-user: a gradio upload/cache folder of this app run alone (removed at shutdown), unless the operator set one."""
    if not config.multi_user or os.environ.get("GRADIO_TEMP_DIR"):
        return None
    config.sessions_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gradio-", dir=config.sessions_dir))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def install_shutdown(sessions: Sessions, extra: Optional[Path] = None) -> None:
    """SIGTERM/SIGINT: cancel jobs, delete every session folder and upload, then stop as the signal asks."""
    import shutil

    def handle(signum: int, frame: Any) -> None:
        sessions.close_all()
        if extra is not None:
            shutil.rmtree(extra, ignore_errors=True)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def launch(config: AppConfig, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Build, queue and serve the app (blocks until stopped)."""
    temp = isolate_gradio_temp(config)
    demo = build_app(config)
    demo.queue(default_concurrency_limit=1, max_size=config.queue_size)
    install_shutdown(demo.aas_sessions, temp)  # type: ignore[attr-defined]
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=f"{config.max_upload_mb}mb",
                allowed_paths=allowed_paths(config), show_error=True, footer_links=["api", "settings"], prevent_thread_lock=True,
                css=CSS)
    # Only now, so writing tiny models never delays the first page.
    config.prepare_async()
    if os.environ.get("SPACE_ID") or os.environ.get("AAS_WARM_EXAMPLE"):
        threading.Thread(target=story.warm_example, args=(demo.aas_ctx,), name="aas-example", daemon=True).start()  # type: ignore[attr-defined]
    try:
        demo.block_thread()
    finally:
        demo.aas_sessions.close_all()  # type: ignore[attr-defined]
