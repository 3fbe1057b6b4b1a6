"""Animate-A-Story web app: `python app.py [--host 0.0.0.0] [--port 7860] [--share] [--tiny] [--multi-user]`."""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The app's command line."""
    parser = argparse.ArgumentParser(description="Animate-A-Story web app")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--tiny", action="store_true", default=None,
                        help="run on tiny random models (written once into a cache folder): a workflow preview, no downloads (or AAS_TINY=1)")
    parser.add_argument("--multi-user", action="store_true", default=None,
                        help="keep each visitor's uploads, characters and outputs apart (default inside a HF Space, or AAS_MULTI_USER=1)")
    return parser.parse_args(argv)


def ensure_nodeps_requirements() -> None:
    """On a Hugging Face Space, install requirements-nodeps.txt (Spaces only install requirements.txt)."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("scenedetect") is None:
        # PySceneDetect must come without its opencv-python dependency (see README: Set up).
        nodeps = Path(__file__).with_name("requirements-nodeps.txt")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-r", str(nodeps)], check=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse flags and serve the app."""
    args = parse_args(argv)
    from aas_core.ui.app import launch
    from aas_core.ui.config import AppConfig

    if os.environ.get("SPACE_ID"):
        args.host = "0.0.0.0"
        ensure_nodeps_requirements()
    launch(AppConfig.from_env(tiny=args.tiny, multi_user=args.multi_user), host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
