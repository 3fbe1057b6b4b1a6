"""Shared test helpers: synthetic clips and tiny model folders."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "clips"

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 60, 230),
    "yellow": (230, 220, 30),
    "white": (240, 240, 240),
}
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def moving_square_frames(
    colour: str = "red",
    direction: str = "right",
    frames: int = 16,
    size: tuple[int, int] = (96, 64),
    background: tuple[int, int, int] = (20, 20, 20),
    square: int = 16,
) -> np.ndarray:
    """(frames, H, W, 3) uint8: a coloured square crossing the frame in one direction."""
    width, height = size
    dx, dy = DIRECTIONS[direction]
    out = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        f = i / max(frames - 1, 1)
        cx = width / 2 + dx * (f - 0.5) * (width - square)
        cy = height / 2 + dy * (f - 0.5) * (height - square)
        out[i] = background
        x0, y0 = int(cx - square / 2), int(cy - square / 2)
        out[i, max(y0, 0) : y0 + square, max(x0, 0) : x0 + square] = COLOURS[colour]
    return out


def write_clip(path: Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float = 8.0) -> Path:
    """Encode frames to an H.264 mp4 through the product's own writer."""
    from aas_core.video_io import write_video

    return write_video(path, frames, fps)


def ensure_tiny(root: Path, *names: str) -> Path:
    """Write tiny models under `root` once per test session; returns `root`."""
    from aas_core.weights import status, write_tiny

    todo = [n for n in names if not status(n, root).present]
    if todo:
        write_tiny(todo, root)
    return root


@contextlib.contextmanager
def serve(handler: type) -> Iterator[str]:
    """Run an HTTP request handler class on localhost in a thread; yields the base URL."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *args: None  # type: ignore[method-assign]  # a client hanging up early is no error here
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[tuple[str, Counter[str]]]:
    """Serve `folder` over HTTP on localhost in a thread; yields (base URL, requests per path)."""
    import http.server

    hits: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self) -> None:
            hits[self.path] += 1
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as base:
        yield base, hits


def closed_port() -> int:
    """A localhost port nothing listens on (connections are refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
