"""The Gradio app in --tiny multi-user mode, driven through gradio_client: every named endpoint, errors, isolation,
the visitor path guard, plain-HTTP session cleanup and shutdown cleanup."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from aas_core.ui.characters import INSTANT, TRAINED
from tests.helpers import moving_square_frames, write_clip

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180
API_SESSION_TTL_S = 20
"""Plain-HTTP sessions of the test server go after this idle time (the product default is 15 minutes)."""


@dataclass
class Server:
    """A running `python app.py --tiny --multi-user` and its scratch folder."""

    url: str
    proc: subprocess.Popen
    scratch: Path
    log: Path

    @property
    def sessions(self) -> Path:
        """The folder holding this app run's session folders."""
        return self.scratch / "tmp" / "aas-sessions"

    def session_folder(self, session_hash: str) -> Path:
        """One visitor's private folder."""
        return next(self.sessions.glob(f"run-*/{session_hash}"))


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


def start_server(scratch: Path, tiny_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    """Start the app in --tiny --multi-user mode with its temp folders inside `scratch`."""
    port = _free_port()
    env = {
        **os.environ,
        "AAS_APP_DIR": str(scratch / "app"),
        "AAS_TINY_DIR": str(tiny_dir),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(scratch / "tmp"),
        **(extra_env or {}),
    }
    env.pop("GRADIO_TEMP_DIR", None)
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    log = scratch / "app.log"
    proc = subprocess.Popen([sys.executable, "app.py", "--tiny", "--multi-user", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http_200(url, START_TIMEOUT_S, proc)
    except (RuntimeError, TimeoutError):
        proc.kill()
        raise RuntimeError(log.read_text()[-4000:])
    return Server(url, proc, scratch, log)


@functools.lru_cache(maxsize=None)
def shared_server() -> Server:
    """One app server for the whole test session (the client and browser tests share it)."""
    scratch = Path(tempfile.mkdtemp(prefix="aas-app-test-"))
    server = start_server(scratch, scratch / "tiny", {"AAS_API_SESSION_TTL_S": str(API_SESSION_TTL_S)})

    def stop() -> None:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)

    atexit.register(stop)
    return server


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
        # 128 px: the instant (IP-Adapter) method needs a shorter side of at least 112 px.
        img = Image.new("RGB", (128, 128), (200, 180 + 20 * i, 150))
        ImageDraw.Draw(img).ellipse((26 + 5 * i, 26, 100 + 5 * i, 106), fill=(60, 40, 30))
        img.save(folder / f"photo{i}.png")
        photos.append(folder / f"photo{i}.png")
    return {"clip": clip, "photos": photos}


def client(server: Server):
    """A new visitor (own session hash); downloads land in the server's scratch folder."""
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=str(server.scratch / "downloads"))


def first_frame(path: Path) -> np.ndarray:
    """The first frame of a video as float32 RGB."""
    from aas_core.video_io import iter_frames

    return next(iter(iter_frames(path))).rgb.astype(np.float32)


def video(value) -> Path:
    """The file of a gr.Video output (a path, or a dict holding one)."""
    return Path(value["video"] if isinstance(value, dict) else value)


SETTINGS = {"backend": "animatediff", "width": 64, "height": 64, "frames": 8, "steps": 2, "estimator": "depth-anything-v2-small",
            "transition": "cut", "transition_s": 0.0, "captions": True, "title_card": False}


def test_page_is_served_with_numbered_tabs_and_preview_label(server: Server) -> None:
    """The page answers; its config names the five numbered tabs and the web preview banner (no command)."""
    with urllib.request.urlopen(server.url + "config", timeout=10) as response:
        config = json.loads(response.read())
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert {"1. Clip Library", "2. Motion Structure", "3. Characters", "4. Story", "5. Compare"} <= labels
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "Workflow preview" in texts and "python -m" not in texts and "Big Buck Bunny" in texts


def test_every_named_endpoint(server: Server, media: dict[str, Path]) -> None:
    """Index, search, depth, train, import, delete, draft, find, generate, new take, all, stitch, save, load, compare."""
    from gradio_client import handle_file

    from aas_core.video_io import probe

    c = client(server)
    summary = c.predict("clip-vit-b-32", api_name="/index_samples")
    assert "Indexed **3** new or changed files" in summary and "shots" in summary
    gallery, table, _player, chosen = c.predict("a rabbit yawns", None, 4, 0, api_name="/search")
    assert 1 <= len(gallery) <= 4 and all(Path(g["image"]).is_file() for g in gallery)
    assert "bunny-" in gallery[0]["caption"] and table.count(".mp4 |") == len(gallery) and chosen == "No clip selected yet."
    _, both_table, _, _ = c.predict("a rabbit", handle_file(str(media["photos"][0])), 2, 0, api_name="/search")
    assert "Searched by the **image**" in both_table

    side, sheet, figures = c.predict(handle_file(str(media["clip"])), 0, 2.0, 1.0, "crop", 64, 64, 8,
                                     "depth-anything-v2-small", 0.5, api_name="/depth")
    assert video(side).stat().st_size > 0 and Path(sheet).is_file() and "Flicker" in figures

    trained = c.predict([handle_file(str(p)) for p in media["photos"]], "hero", "boy", 3, 3, False, False, TRAINED, api_name="/train")
    assert "Saved" in trained[0] and "after 3 steps" in trained[0]
    instant = c.predict([handle_file(str(p)) for p in media["photos"]], "kid", "boy", 3, 3, False, False, INSTANT, api_name="/train")
    assert "ready at once" in instant[0] and {"<hero>", "<kid>"} <= {g["caption"].split(" ")[0] for g in instant[3]}
    c.predict("kid", api_name="/delete_concept")
    assert "Saved **`<hero>`**" in trained[0] and trained[3] and "<hero>" in trained[3][0]["caption"]

    board, _, _ = c.predict("a rabbit comes out | <hero> climbs out of a burrow | Out\na rabbit yawns | a rabbit yawns | Yawn",
                            "Test story", api_name="/draft")
    assert [s["id"] for s in board] == ["shot-01", "shot-02"]
    planned, _, _, plan_status = c.predict("A fox runs through snow. It stops.", "Fox", None, api_name="/plan")
    assert len(planned) == 2 and "with the sentences planner" in plan_status and "no usable plan" in plan_status
    assert "python -m" not in plan_status and "/tmp" not in plan_status
    found = c.predict(board, "shot-01", api_name="/find_clips")
    assert found and "bunny-" in found[0]["caption"]
    board[1]["clip"] = "bunny-yawns.mp4@0-1.5"  # a sample named by its short name
    board, _, status, shot, comparison = c.predict("Test story", board, "shot-01", SETTINGS, api_name="/generate_shot")
    assert video(shot).stat().st_size > 0 and video(comparison).is_file()
    assert "| shot-01 | generated" in status and "| shot-02 | skipped" in status and "workflow preview" in status
    assert len(board[0]["takes"]) == 1 and board[0]["pick"] == 0 and not board[0]["takes"][0]["video"].startswith("/")

    board, _, status, second, _ = c.predict("Test story", board, "shot-01", SETTINGS, api_name="/new_take")
    seeds = [t["seed"] for t in board[0]["takes"]]
    assert len(seeds) == 2 and seeds[1] == seeds[0] + 1 and board[0]["pick"] == 1
    board, _, status, _, _ = c.predict("Test story", board, SETTINGS, api_name="/generate_all")
    assert "| shot-02 | generated" in status and "| shot-01 | cached" in status
    board[0]["pick"] = 0  # stitch the first take of shot-01
    final, storyboard, files, status = c.predict("Test story", board, SETTINGS, api_name="/stitch")
    assert probe(video(final)).duration == pytest.approx(2 * probe(video(shot)).duration, abs=0.2) and Path(storyboard).is_file()
    assert any(Path(f).name == "story_report.html" for f in files) and "generated" not in status
    # What was stitched is the picked take 1 of shot-01 (first frame), not take 2 (the next seed), and run.json says so.
    start, take1, take2 = (first_frame(video(v)) for v in (final, shot, second))
    assert np.abs(start - take1).mean() < 0.5 * np.abs(start - take2).mean()
    folder = server.session_folder(c.session_hash)
    recorded = json.loads((folder / "outputs" / "story" / "run.json").read_text())
    assert [Path(s["video"]).resolve() for s in recorded["shots"]] == [(folder / card["takes"][card["pick"]]["video"]).resolve()
                                                                      for card in board]

    project = c.predict("Test story", "the text", board, {**SETTINGS, "frames": 8, "transition": "cut"}, api_name="/save_project")
    text = Path(project).read_text()
    assert text.startswith("# animate-a-story app:") and "bunny-yawns.mp4" in text and "/tmp" not in text
    loaded = c.predict(handle_file(project), api_name="/load_project")
    title, story_text, loaded_board, _, loaded_settings = loaded[:5]
    assert (title, story_text) == ("Test story", "the text") and loaded_settings["transition"] == "cut"
    assert [len(s["takes"]) for s in loaded_board] == [2, 1] and loaded_board[0]["pick"] == 0
    assert loaded_board[1]["clip"] == "bunny-yawns.mp4@0-1.5"

    grid, metrics, note = c.predict("a rabbit", "hero", 0, 8, 64, 2,
                                    [{"backend": "animatediff", "strength": 0.8, "character": False, "estimator": "depth-anything-v2-small"},
                                     {"backend": "animatediff", "strength": 0.2, "character": True, "estimator": "depth-anything-v2-small"}],
                                    api_name="/compare")
    info = probe(video(grid))
    assert info.width == 128 and info.height == 64 and "Panels: 1: animatediff" in note
    assert len(metrics["data"]) == 2 and metrics["data"][1][4] != "-" and metrics["data"][0][4] == "-"

    import torch
    from safetensors.torch import save_file

    width = json.loads((server.scratch / "tiny" / "sd15" / "text_encoder" / "config.json").read_text())["hidden_size"]
    ti_file = server.scratch / "villain.safetensors"
    save_file({"emb_params": torch.randn(2, width)}, str(ti_file))
    imported = c.predict(handle_file(str(ti_file)), "textual inversion", "villain", "man", "", False, api_name="/import_concept")
    assert [g["caption"].split(" ")[0] for g in imported] == ["<hero>", "<villain>"]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="tick 'Overwrite"):
        c.predict(handle_file(str(ti_file)), "textual inversion", "villain", "man", "", False, api_name="/import_concept")
    remaining = c.predict("villain", api_name="/delete_concept")[0]
    assert [g["caption"].split(" ")[0] for g in remaining] == ["<hero>"]


def test_errors_reach_the_user_without_commands_or_paths(server: Server) -> None:
    """Engine errors arrive as messages that say what to do, with no server path and no `python -m`."""
    from gradio_client.exceptions import AppError

    c = client(server)
    for args, api, pattern in [
        (("a dog", None, 4, 0), "/search", "your clip library is empty"),
        ((None, "/etc", "clip-vit-b-32"), "/index_clips", "off in this shared app"),
        (([], "x", "cat", 2, 0, False, False, INSTANT), "/train", "3 to 20 photos"),
        ((None, 0, None, 1.0, "crop", 64, 64, 8, "depth-anything-v2-small", 0.5), "/depth", "no clip yet"),
        (("T", [{"id": "s1", "prompt": " "}, {"id": "s2", "prompt": ""}], SETTINGS), "/generate_all", "write a prompt for s1, s2"),
    ]:
        with pytest.raises(AppError, match=pattern) as info:
            c.predict(*args, api_name=api)
        assert "python -m" not in str(info.value) and str(server.scratch) not in str(info.value)


def test_two_sessions_do_not_see_each_other(server: Server, media: dict[str, Path]) -> None:
    """Visitor A's clips and character are invisible to visitor B (multi-user mode)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    a, b = client(server), client(server)
    assert "Indexed **1**" in a.predict([handle_file(str(media["clip"]))], "", "clip-vit-b-32", api_name="/index_clips")
    a.predict([handle_file(str(p)) for p in media["photos"]], "secret", "cat", 1, 0, False, False, INSTANT, api_name="/train")
    with pytest.raises(AppError, match="index|library"):
        b.predict("a square", None, 4, 0, api_name="/search")
    with pytest.raises(AppError, match="no concept named 'secret'|secret"):
        b.predict("secret", api_name="/delete_concept")
    own, other = server.session_folder(a.session_hash), server.session_folder(b.session_hash)
    assert [p.name for p in own.glob("uploads/clips-*/*")] == ["square.mp4"]
    assert (own / "weights" / "concepts" / "secret").is_dir() and not (other / "weights" / "concepts" / "secret").exists()


def test_visitor_paths_outside_the_session_are_refused(server: Server, media: dict[str, Path], tmp_path: Path) -> None:
    """Another visitor's upload, a server file, a symlink to one and a `..` path, in a shot or in a project: refused
    with the base name only, and nothing is generated; the visitor's own upload by bare name works."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    a, b = client(server), client(server)
    a.predict([handle_file(str(media["clip"]))], "", "clip-vit-b-32", api_name="/index_clips")
    b.predict("clip-vit-b-32", api_name="/index_samples")
    theirs = next(server.session_folder(a.session_hash).glob("uploads/clips-*/square.mp4"))
    mine = server.session_folder(b.session_hash)
    (mine / "uploads").mkdir(exist_ok=True)
    (mine / "uploads" / "linked.mp4").symlink_to(theirs)
    server_file = media["clip"]
    cases = {
        "other visitor": f"{theirs}@0-1",
        "server file": f"{server_file}@0-1",
        "symlink": "linked.mp4@0-1",
        "dotdot": f"../{a.session_hash}/uploads/{theirs.parent.name}/square.mp4@0-1",
    }
    for case, clip in cases.items():
        board = [{"id": "s1", "prompt": "a cat", "clip": clip}]
        with pytest.raises(AppError, match="not one of your uploads") as info:
            b.predict("T", board, "s1", SETTINGS, api_name="/generate_shot")
        message = str(info.value)
        assert "/" not in message.split("not one of your uploads")[0], (case, message)
        project = tmp_path / f"{case.replace(' ', '-')}.yaml"
        project.write_text(f"title: t\nshots:\n- prompt: a cat\n  clip: {{path: '{clip.split('@')[0]}', start: 0, end: 1}}\n")
        with pytest.raises(AppError, match="names files you cannot use here"):
            b.predict(handle_file(str(project)), api_name="/load_project")
    assert not (mine / "outputs" / "story" / "shots").exists()
    # The visitor's own upload works by its bare name.
    b.predict([handle_file(str(media["clip"]))], "", "clip-vit-b-32", api_name="/index_clips")
    board, _, status, shot, _ = b.predict("T", [{"id": "s1", "prompt": "a cat", "clip": "square.mp4@0-1"}], "s1", SETTINGS,
                                          api_name="/generate_shot")
    assert "| s1 | generated" in status and video(shot).is_file()


def test_gradio_file_route_serves_no_server_or_session_file(server: Server, media: dict[str, Path]) -> None:
    """/gradio_api/file= refuses concepts, weights, session folders and the app's own files; samples are public."""
    c = client(server)
    c.predict("clip-vit-b-32", api_name="/index_samples")
    folder = server.session_folder(c.session_hash)
    from aas_core.ui.samples import SAMPLES_DIR

    refused = [next(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()), server.scratch / "tiny" / "sd15" / "model_index.json",
               REPO / "app.py", Path("/etc/hostname")]
    for path in refused:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=10)
        assert info.value.code in (403, 404), path
    with urllib.request.urlopen(f"{server.url}gradio_api/file={SAMPLES_DIR / 'photos' / 'bunny-1.jpg'}", timeout=10) as response:
        assert response.status == 200


def test_plain_http_sessions_are_cleaned_after_a_short_idle_time(server: Server) -> None:
    """A session made by one plain HTTP call (no browser to close) is removed after the API idle time."""
    request = urllib.request.Request(f"{server.url}gradio_api/call/save_project", method="POST",
                                     data=json.dumps({"data": ["T", "", [{"id": "s1", "prompt": "a cat"}], SETTINGS]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{server.url}gradio_api/call/save_project/{event}", timeout=60) as response:
        body = response.read().decode()
    assert "event: complete" in body and ".yaml" in body
    made = {p for p in server.sessions.glob("run-*/*/outputs/projects/t.yaml")}
    assert made
    deadline = time.monotonic() + API_SESSION_TTL_S * 3
    while any(p.exists() for p in made) and time.monotonic() < deadline:
        time.sleep(1)
    assert not any(p.exists() for p in made)


def test_sigterm_removes_session_folders_and_uploads(server: Server, media: dict[str, Path]) -> None:
    """Stopping the app (SIGTERM) deletes every session folder and its gradio upload folder."""
    from gradio_client import Client, handle_file

    scratch = Path(tempfile.mkdtemp(prefix="aas-app-term-"))
    try:
        other = start_server(scratch, server.scratch / "tiny")
        c = Client(other.url, verbose=False, download_files=str(scratch / "downloads"))
        c.predict([handle_file(str(media["clip"]))], "", "clip-vit-b-32", api_name="/index_clips")
        assert list(other.sessions.glob("run-*/*/uploads/*/square.mp4"))
        assert list(other.sessions.glob("gradio-*/**/square.mp4"))
        other.proc.send_signal(signal.SIGTERM)
        other.proc.wait(30)
        assert not list(other.sessions.glob("run-*")) and not list(other.sessions.glob("gradio-*"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
