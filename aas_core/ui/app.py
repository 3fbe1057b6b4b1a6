"""The Blocks assembly: five tabs over `aas_core`, a queue with GPU work at concurrency 1, per-visitor sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import gradio as gr

from aas_core.ui import characters, compare, depth, library, story
from aas_core.ui.common import UIContext
from aas_core.ui.config import TINY_LABEL, AppConfig
from aas_core.ui.session import Sessions

TITLE = "Animate-A-Story"
TABS = (("Characters", characters), ("Clip Library", library), ("Motion Structure", depth), ("Story", story), ("Compare", compare))


def build_app(config: Optional[AppConfig] = None) -> gr.Blocks:
    """The whole app, not launched (tiny models are written after launch, or on the first action)."""
    config = config or AppConfig.from_env()
    sessions = Sessions(config)
    with gr.Blocks(title=TITLE, delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(f"# {TITLE}\nTurn a written story into a video: find clips whose motion fits each shot, "
                    "repaint them from a prompt that follows their depth, keep your characters consistent, stitch the story.")
        if config.tiny:
            gr.Markdown(TINY_LABEL, elem_id="tiny-banner")
        if config.multi_user:
            gr.Markdown("Your uploads, characters and outputs are private to this browser session and deleted when you leave.")
        ctx = UIContext(config=config, sessions=sessions, selected_clip=gr.State(None), depth_ref=gr.State(None),
                        concepts_changed=gr.State(0))
        with gr.Tabs():
            for label, module in TABS:
                with gr.Tab(label, id=label.lower().replace(" ", "-")):
                    module.render(ctx)
        for fn, outputs in ctx.loaders:
            demo.load(fn, None, outputs, api_name=False)
        if ctx.refreshers:
            components = [component for component, _ in ctx.refreshers]
            demo.load(lambda: [fn() for _, fn in ctx.refreshers], None, components, api_name=False)

        def leave(request: gr.Request) -> None:
            sessions.close(request.session_hash)

        demo.unload(leave)
    demo.aas_config = config  # type: ignore[attr-defined]
    demo.aas_sessions = sessions  # type: ignore[attr-defined]
    return demo


def allowed_paths(config: AppConfig) -> list[str]:
    """Folders whose files the app shows (thumbnails, concept images, samples) beyond cwd and the temp folder."""
    paths = [config.cache_dir, config.weights_root / "concepts", config.outputs.absolute()]
    if config.library is not None:
        paths.append(config.library)
    else:
        from aas_core.library import default_library

        paths.append(default_library())
    return [str(Path(p)) for p in paths]


def launch(config: AppConfig, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Build, queue and serve the app (blocks until stopped)."""
    demo = build_app(config)
    demo.queue(default_concurrency_limit=1, max_size=config.queue_size)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=f"{config.max_upload_mb}mb",
                allowed_paths=allowed_paths(config), show_error=True, footer_links=["api", "settings"], prevent_thread_lock=True)
    # Only now, so writing tiny models never delays the first page.
    config.prepare_async()
    demo.block_thread()
