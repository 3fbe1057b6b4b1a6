"""The Gradio app in --tiny multi-user mode, driven through gradio_client: every tab's main action, errors, isolation."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import moving_square_frames, write_clip

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


@dataclass
class Server:
    """A running `python app.py --tiny --multi-user` and its scratch folder."""

    url: str
    proc: subprocess.Popen
    scratch: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_200(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Seconds until `url` answers 200 (fails if the process dies first)."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - began
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@functools.lru_cache(maxsize=None)
def shared_server() -> Server:
    """One app server for the whole test session (the client and browser tests share it)."""
    scratch = Path(tempfile.mkdtemp(prefix="aas-app-test-"))
    port = _free_port()
    env = {
        **os.environ,
        "AAS_APP_DIR": str(scratch / "app"),
        "AAS_TINY_DIR": str(scratch / "tiny"),
        "GRADIO_TEMP_DIR": str(scratch / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(scratch / "tmp"),
    }
    (scratch / "tmp").mkdir()
    log = scratch / "app.log"
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--tiny", "--multi-user", "--port", str(port)],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)

    atexit.register(stop)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http_200(url, START_TIMEOUT_S, proc)
    except (RuntimeError, TimeoutError):
        raise RuntimeError(log.read_text()[-4000:])
    return Server(url, proc, scratch, log)


@pytest.fixture(scope="session")
def server() -> Server:
    """The shared app server."""
    return shared_server()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clip and three photos to upload."""
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("app_media")
    clip = write_clip(folder / "square.mp4", moving_square_frames("yellow", "down", frames=24, size=(96, 64)))
    photos = []
    for i in range(3):
        img = Image.new("RGB", (96, 96), (200, 180 + 20 * i, 150))
        ImageDraw.Draw(img).ellipse((20 + 4 * i, 20, 76 + 4 * i, 80), fill=(60, 40, 30))
        img.save(folder / f"photo{i}.png")
        photos.append(folder / f"photo{i}.png")
    return {"clip": clip, "photos": photos}


def client(server: Server):
    """A new visitor (own session hash); downloads land in the server's scratch folder."""
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=str(server.scratch / "downloads"))


def video(value) -> Path:
    """The file of a gr.Video output (a path, or a dict holding one)."""
    return Path(value["video"] if isinstance(value, dict) else value)


def test_page_is_served_with_five_tabs_and_preview_label(server: Server) -> None:
    """The page answers and its config names every tab and the tiny-preview banner."""
    import json

    with urllib.request.urlopen(server.url + "config", timeout=10) as response:
        config = json.loads(response.read())
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert {"Characters", "Clip Library", "Motion Structure", "Story", "Compare"} <= labels
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "Workflow preview" in texts


def test_every_tab_main_action(server: Server, media: dict[str, Path]) -> None:
    """Index, search, depth, train, draft, generate a shot, stitch, compare, save: one visitor, in order."""
    from gradio_client import handle_file

    c = client(server)
    summary = c.predict("clip-vit-b-32", api_name="/index_samples")
    assert "3** new or changed files" in summary and "shots" in summary

    gallery, table = c.predict("a red ball rolling", None, 4, 0, api_name="/search")
    assert 1 <= len(gallery) <= 4 and all(Path(g["image"]).is_file() for g in gallery)
    assert "score" in gallery[0]["caption"] and ".mp4" in gallery[0]["caption"]
    assert table.count(".mp4 |") == len(gallery)
    by_image, _ = c.predict("", handle_file(str(media["photos"][0])), 2, 0, api_name="/search")
    assert len(by_image) == 2

    side, sheet, figures = c.predict(handle_file(str(media["clip"])), 0, 2.0, 1.0, "crop", 64, 64, 8,
                                     "depth-anything-v2-small", 0.5, api_name="/depth")
    assert video(side).stat().st_size > 0 and Path(sheet).is_file()
    assert "Flicker" in figures and "naive per-frame" in figures

    trained = c.predict([handle_file(str(p)) for p in media["photos"]], "hero", "boy", 3, 3, False, api_name="/train")
    assert "Saved **`<hero>`**" in trained[0] and "workflow preview" in trained[0]
    assert trained[3] and "<hero>" in trained[3][0]["caption"]

    rows, _ = c.predict("a red ball rolling to the right | <hero> kicks a ball | Kick\na kite drifting left | a kite over hills | Kite",
                        "Test story", api_name="/draft")
    assert [r[0] for r in rows["data"]] == ["shot-01", "shot-02"]
    settings = ["animatediff", 64, 64, 8, 2, "depth-anything-v2-small", "cut", 0.0, True, False, None]
    shot, comparison, final, storyboard, files, status = c.predict("Test story", rows, "shot-01", *settings, api_name="/generate_shot")
    assert video(shot).stat().st_size > 0 and video(final).is_file()
    assert "| shot-01 | generated" in status and "| shot-02 | skipped" in status and "workflow preview" in status

    out = c.predict("Test story", rows, "shot-01", *settings, api_name="/stitch")
    from aas_core.video_io import probe

    assert probe(video(out[2])).duration > 0.5 and Path(out[3]).is_file()
    assert any(Path(f).name == "story_report.html" for f in out[4])

    grid, metrics, note = c.predict("a ball", "hero", 0, 8, 64, 2,
                                    {"headers": ["backend", "strength", "concept", "estimator"],
                                     "data": [["animatediff", 0.8, "no", "depth-anything-v2-small"],
                                              ["animatediff", 0.2, "yes", "depth-anything-v2-small"]]},
                                    api_name="/compare")
    info = probe(video(grid))
    assert info.width == 128 and info.height == 64
    assert len(metrics["data"]) == 2 and metrics["data"][1][5] != "-"  # identity only for the concept row

    import json

    import torch
    from safetensors.torch import save_file

    width = json.loads((server.scratch / "tiny" / "sd15" / "text_encoder" / "config.json").read_text())["hidden_size"]
    ti_file = server.scratch / "villain.safetensors"
    save_file({"emb_params": torch.randn(2, width)}, str(ti_file))
    imported = c.predict(handle_file(str(ti_file)), "textual inversion", "villain", "man", "", api_name="/import_concept")
    assert [g["caption"].split(" ")[0] for g in imported] == ["<hero>", "<villain>"]
    remaining = c.predict("villain", api_name="/delete_concept")[0]
    assert [g["caption"].split(" ")[0] for g in remaining] == ["<hero>"]

    project = c.predict("Test story", rows, *settings, api_name="/save_project")
    assert "<hero> kicks a ball" in Path(project).read_text()
    loaded_title, loaded_rows, _ = c.predict(handle_file(project), api_name="/load_project")
    assert loaded_title == "Test story" and loaded_rows["data"][:2] == rows["data"][:2]


def test_errors_reach_the_user_with_the_fix(server: Server) -> None:
    """Engine errors arrive as gr.Error messages that say what to do."""
    from gradio_client.exceptions import AppError

    c = client(server)
    with pytest.raises(AppError, match="index a folder of clips first|no clip library"):
        c.predict("a dog", None, 4, 0, api_name="/search")
    with pytest.raises(AppError, match="off in multi-user mode"):
        c.predict(None, "/etc", "clip-vit-b-32", api_name="/index_clips")
    with pytest.raises(AppError, match="3 to 20 photos"):
        c.predict([], "x", "cat", 2, 0, False, api_name="/train")
    with pytest.raises(AppError, match="no clip yet"):
        c.predict(None, 0, None, 1.0, "crop", 64, 64, 8, "depth-anything-v2-small", 0.5, api_name="/depth")


def test_two_sessions_do_not_see_each_other(server: Server, media: dict[str, Path]) -> None:
    """Visitor A's clips and character are invisible to visitor B (multi-user mode)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    a, b = client(server), client(server)
    assert "new or changed files" in a.predict([handle_file(str(media["clip"]))], "", "clip-vit-b-32", api_name="/index_clips")
    assert "square.mp4" in a.predict("a square", None, 4, 0, api_name="/search")[1]
    a.predict([handle_file(str(p)) for p in media["photos"]], "secret", "cat", 1, 0, False, api_name="/train")
    with pytest.raises(AppError, match="no clip library"):
        b.predict("a square", None, 4, 0, api_name="/search")
    with pytest.raises(AppError, match="no concept named 'secret'"):
        b.predict("secret", api_name="/delete_concept")
    folders = {p.name: p for p in (server.scratch / "tmp" / "aas-sessions").glob("run-*/*") if p.is_dir()}
    own, other = folders[a.session_hash], folders[b.session_hash]
    assert [p.name for p in own.glob("uploads/clips-*/*")] == ["square.mp4"]
    assert (own / "weights" / "concepts" / "secret").is_dir()
    assert not list(other.glob("uploads/*/*")) and not (other / "weights" / "concepts" / "secret").exists()
