"""Time to first HTTP 200: `python app.py --tiny` vs a bare 3-tab Gradio app, started side by side (alternating).

    python bench/app_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE_APP = """
import sys
import gradio as gr
with gr.Blocks() as demo:
    for name in ("One", "Two", "Three"):
        with gr.Tab(name):
            box = gr.Textbox(label=name)
            gr.Button("Go").click(lambda text: text, box, box)
demo.queue().launch(server_port=int(sys.argv[1]))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_200(cmd: list[str], port: int, env: dict[str, str], timeout: float = 180.0) -> float:
    """Seconds from process start until GET / answers 200; the process is stopped afterwards."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - began < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - began
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{cmd} did not answer in {timeout} s")
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    """Print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="aas-startup-"))
    bare = scratch / "bare_app.py"
    bare.write_text(BARE_APP)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(scratch / "gradio"),
           "AAS_APP_DIR": str(scratch / "app"), "AAS_TINY_DIR": str(scratch / "tiny")}
    # Warm the OS file cache once so neither side pays the first cold import.
    time_to_200([sys.executable, str(bare), str(port := _port())], port, env)
    times: dict[str, list[float]] = {"bare 3-tab gradio": [], "app.py --tiny": []}
    for run in range(args.runs):
        port = _port()
        times["bare 3-tab gradio"].append(time_to_200([sys.executable, str(bare), str(port)], port, env))
        port = _port()
        times["app.py --tiny"].append(time_to_200([sys.executable, "app.py", "--tiny", "--port", str(port)], port, env))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, value in medians.items():
        print(f"median {name}: {value:.2f} s")
    print(f"ratio app / bare: {medians['app.py --tiny'] / medians['bare 3-tab gradio']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
