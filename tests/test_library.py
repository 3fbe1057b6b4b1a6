"""Clip library: reader (scan, shots), embedder, writer (shards, generations), faiss search, CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aas_core.cli import main
from aas_core.errors import Cancelled, InputError
from aas_core.library import ReaderSettings, index_folder, library_info, list_shots, search
from aas_core.library.reader import iter_shots, scan_folder
from aas_core.library.store import LibraryStore
from aas_core.library.vector_index import choose_index_type
from aas_core.progress import CancelToken
from tests.helpers import SHARED_CLIPS, closed_port, ensure_tiny, moving_square_frames, serve, serve_folder, write_clip


@pytest.fixture()
def weights(tiny_root):
    return ensure_tiny(tiny_root, "clip-vit-b-32", "clip-vit-l-14")


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def _cut_clip(path, colours=("red", "green", "blue"), seconds=1.5, fps=10):
    """One file with hard cuts: a solid-background segment per colour."""
    segments = []
    for i, colour in enumerate(colours):
        seg = moving_square_frames(colour, "right", frames=int(seconds * fps), background=(40 * i, 80, 200 - 60 * i))
        segments.append(seg)
    return write_clip(path, np.concatenate(segments), fps=fps)


def test_shots_follow_hard_cuts(tmp_path):
    clip = _cut_clip(tmp_path / "cuts.mp4")
    shots = list(iter_shots(clip, ReaderSettings(sample_fps=4)))
    assert len(shots) == 3
    assert [round(s.start, 1) for s in shots] == [0.0, 1.5, 3.0]
    assert shots[-1].end == pytest.approx(4.5, abs=0.11)
    assert all(s.crops and s.crops[0].shape == (224, 224, 3) for s in shots)


def test_long_shots_are_split(tmp_path):
    clip = write_clip(tmp_path / "long.mp4", moving_square_frames(frames=60), fps=10)
    shots = list(iter_shots(clip, ReaderSettings(max_shot_seconds=2.0)))
    assert [round(s.duration, 2) for s in shots] == [2.0, 2.0, 2.0]


@pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="shared clips not present")
def test_real_footage_cuts():
    shots = list(iter_shots(SHARED_CLIPS / "bikes.mp4"))
    starts = [round(s.start, 1) for s in shots]
    for cut in (1.2, 3.0, 5.5):  # cuts near frames 30, 76, 137 at 25 fps
        assert any(abs(s - cut) <= 0.1 for s in starts), (cut, starts)
    # The cut at frame 242 leaves a 0.3 s sliver, below the minimum shot length: no shot spans it.
    assert shots[-1].end == pytest.approx(9.68, abs=0.05)


def _stored(lib):
    """(searchable shots, vector dimension) of a library."""
    db = LibraryStore(lib).open_live()
    try:
        return db.counts()[1], db.stamp.embed_dim
    finally:
        db.close()


def _make_folder(tmp_path):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    write_clip(folder / "a.mp4", moving_square_frames("red", "right", frames=16), fps=8)
    write_clip(folder / "sub" / "b.mp4", moving_square_frames("blue", "down", frames=16), fps=8)
    return folder


def test_index_is_incremental_and_skips_bad_files(tmp_path, weights):
    folder = _make_folder(tmp_path)
    (folder / "notes.txt").write_text("hello")
    (folder / "empty.mp4").write_bytes(b"")
    good = (folder / "a.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 4])
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(folder / "audio_only.mp4"))
    lib = tmp_path / "lib"

    first = index_folder(folder, lib, weights_root=weights)
    assert (first.files_indexed, first.shots) == (5, 2)
    reasons = {p.split("/")[-1]: r for p, r in ((s["path"], s["reason"]) for s in first.skipped)}
    assert set(reasons) == {"notes.txt", "empty.mp4", "truncated.mp4", "audio_only.mp4"}
    assert "no video stream" in reasons["audio_only.mp4"]
    assert len(library_info(lib).skipped) == 4

    again = index_folder(folder, lib, weights_root=weights)
    assert (again.files_indexed, again.files_reused) == (0, 5)

    write_clip(folder / "c.mp4", moving_square_frames("green", "left", frames=16), fps=8)
    write_clip(folder / "a.mp4", moving_square_frames("yellow", "up", frames=24), fps=8)  # changed
    (folder / "sub" / "b.mp4").unlink()
    third = index_folder(folder, lib, weights_root=weights)
    assert (third.files_indexed, third.files_removed) == (2, 1)
    assert sorted(s["path"].split("/")[-1] for s in list_shots(lib)) == ["a.mp4", "c.mp4"]
    assert _stored(lib) == (2, 512)


def test_killed_run_keeps_previous_index_and_resumes(tmp_path, weights):
    folder = _make_folder(tmp_path)
    lib = tmp_path / "lib"
    index_folder(folder, lib, weights_root=weights)
    before = [h.path for h in search("a red square", k=2, library=lib, weights_root=weights)]
    for name in ("c", "d", "e"):
        write_clip(folder / f"{name}.mp4", moving_square_frames("green", "left", frames=16), fps=8)

    token = CancelToken()

    def cancel_after_first(fraction: float, message: str) -> None:
        if message.startswith("1/"):
            token.cancel()

    with pytest.raises(Cancelled):
        index_folder(folder, lib, weights_root=weights, on_progress=cancel_after_first, cancel=token)
    assert [h.path for h in search("a red square", k=2, library=lib, weights_root=weights)] == before
    assert library_info(lib).files == 2

    resumed = index_folder(folder, lib, weights_root=weights)
    assert resumed.files_indexed == 2 and resumed.files_reused == 3
    assert library_info(lib).files == 5


def test_another_model_is_refused(tmp_path, weights):
    folder = _make_folder(tmp_path)
    lib = tmp_path / "lib"
    index_folder(folder, lib, weights_root=weights)
    with pytest.raises(InputError, match="--reindex"):
        index_folder(folder, lib, model="clip-vit-l-14", weights_root=weights)
    summary = index_folder(folder, lib, model="clip-vit-l-14", weights_root=weights, reindex=True)
    assert summary.model == "clip-vit-l-14" and _stored(lib) == (2, 768)


def test_changed_weights_are_detected_at_search(tmp_path, weights):
    import torch
    from safetensors.torch import load_file, save_file

    other = tmp_path / "w"
    ensure_tiny(other, "clip-vit-b-32")
    folder = _make_folder(tmp_path)
    index_folder(folder, tmp_path / "lib", weights_root=other)
    st = other / "clip-vit-b-32" / "open_clip_model.safetensors"
    state = load_file(str(st))
    state = {k: v + 0.01 * torch.ones_like(v) for k, v in state.items()}
    save_file(state, str(st))
    from aas_core import models

    models.release("clip-vit-b-32")
    with pytest.raises(InputError, match="re-index"):
        search("a square", library=tmp_path / "lib", weights_root=other)


def test_search_errors(tmp_path, weights):
    with pytest.raises(InputError, match="no clip library"):
        search("a dog", library=tmp_path / "none", weights_root=weights)
    folder = tmp_path / "only_text"
    folder.mkdir()
    (folder / "x.txt").write_text("no video")
    index_folder(folder, tmp_path / "lib", weights_root=weights)
    with pytest.raises(InputError, match="no shots"):
        search("a dog", library=tmp_path / "lib", weights_root=weights)
    with pytest.raises(InputError, match="type what happens"):
        search("   ", library=tmp_path / "lib", weights_root=weights)
    with pytest.raises(InputError, match="not a folder"):
        scan_folder(tmp_path / "missing")


def test_vector_index_choice_under_a_memory_budget():
    gb = 1 << 30
    assert choose_index_type(1000) == "exact"
    assert choose_index_type(10**6, 512, 8 * gb) == "ivf-flat"
    assert choose_index_type(10**7, 512, 8 * gb) == "ivf-sq8"
    assert choose_index_type(10**7, 512, 2 * gb) == "ivf-pq"


def test_cli_index_search_info_list_json(tmp_path, weights, capsys):
    folder = _make_folder(tmp_path)
    lib = str(tmp_path / "lib")
    common = ["--library", lib, "--weights", str(weights), "--json"]
    assert main(["library", "index", str(folder), *common]) == 0
    assert json.loads(capsys.readouterr().out)["shots"] == 2
    assert main(["library", "search", "a red square", "--k", "1", *common]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert set(hit) >= {"path", "start", "end", "score", "thumbnail", "duration"}
    assert main(["library", "search", "x", "--min-duration", "100", *common]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == []
    assert main(["library", "info", *common]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 2
    assert main(["library", "list", *common]) == 0
    assert len(json.loads(capsys.readouterr().out)["shots"]) == 2
    assert main(["library", "compact", "--memory-budget", "1GB", *common]) == 0
    assert json.loads(capsys.readouterr().out)["index_type"] == "exact"
    assert main(["library", "compact", "--memory-budget", "lots", *common]) != 0
    assert "not a size" in json.loads(capsys.readouterr().out)["error"]


# --- retrieval quality: a tiny CLIP trained here must rank the right clip first ---------------------

POSITIONS = {"top": 18, "bottom": 78}
TRAIN_COLOURS = ("red", "green", "blue", "yellow")


def _scene(colour: str, position: str, x: int, side: int = 96, square: int = 20) -> np.ndarray:
    from tests.helpers import COLOURS

    img = np.full((side, side, 3), 30, np.uint8)
    y = POSITIONS[position]
    img[y - square // 2 : y + square // 2, x : x + square] = COLOURS[colour]
    return img


@pytest.fixture(scope="module")
def trained_clip_weights(tmp_path_factory):
    """Fit a tiny CLIP on captioned synthetic frames and save it in the real open_clip layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from aas_core.tiny.clip import tiny_open_clip_config

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = tiny_open_clip_config(64)
    config["model_cfg"]["vision_cfg"].update(image_size=64, patch_size=16)
    model = open_clip.CLIP(**config["model_cfg"])
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    classes = [(c, p) for c in TRAIN_COLOURS for p in POSITIONS]
    tokens = tokenizer([f"a {c} square at the {p}" for c, p in classes])
    mean = torch.tensor(config["preprocess_cfg"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["preprocess_cfg"]["std"]).view(1, 3, 1, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    for _ in range(250):
        images = np.stack([_scene(c, p, int(rng.integers(0, 76))) for c, p in classes])
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        pixels = torch.nn.functional.interpolate(pixels, size=64, mode="area")
        image_features, text_features, scale = model((pixels - mean) / std, tokens)
        logits = scale * image_features @ text_features.T
        labels = torch.arange(len(classes))
        loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5, f"the tiny CLIP did not fit its captions (loss {loss.item():.3f})"
    root = tmp_path_factory.mktemp("trained_weights")
    folder = root / "clip-vit-b-32"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return root


def test_trained_clip_ranks_the_matching_clip_first(tmp_path, trained_clip_weights):
    folder = tmp_path / "clips"
    folder.mkdir()
    for colour in TRAIN_COLOURS:
        for position in POSITIONS:
            frames = np.stack([_scene(colour, position, x) for x in range(0, 76, 5)])
            write_clip(folder / f"{colour}_{position}.mp4", frames, fps=8)
    lib = tmp_path / "lib"
    index_folder(folder, lib, weights_root=trained_clip_weights)
    for colour in TRAIN_COLOURS:
        for position in POSITIONS:
            hits = search(f"a {colour} square at the {position}", k=3, library=lib, weights_root=trained_clip_weights)
            assert hits[0].path.endswith(f"{colour}_{position}.mp4"), [h.path for h in hits]
            assert hits[0].score > hits[1].score
    by_image = search(image=_scene("blue", "bottom", 40), k=1, library=lib, weights_root=trained_clip_weights)
    assert by_image[0].path.endswith("blue_bottom.mp4")


# --- captions and motion in the ranking -----------------------------------------------------------


def _texture(width: int = 160, height: int = 64) -> np.ndarray:
    """A smooth, non-repeating pattern: optical flow can follow it when it moves."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    base = 120 + 50 * np.sin(x / 7.0) * np.cos(y / 5.0) + 40 * np.sin((x + 2 * y) / 11.0)
    return np.repeat(np.clip(base, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _motion_folder(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    texture = _texture()
    write_clip(folder / "still.mp4", np.stack([texture[:, :96]] * 16), fps=8)
    write_clip(folder / "pan.mp4", np.stack([texture[:, 4 * i : 4 * i + 96] for i in range(16)]), fps=8)
    write_clip(folder / "square.mp4", moving_square_frames("red", "right", frames=16), fps=8)
    return folder


def test_motion_statistics_filter_and_show_in_hits(tmp_path, weights):
    folder = _motion_folder(tmp_path)
    lib = tmp_path / "lib"
    index_folder(folder, lib, weights_root=weights)
    hits = {h.path.split("/")[-1]: h for h in search("anything", k=3, library=lib, weights_root=weights)}
    assert hits["still.mp4"].motion_class == "still" and hits["pan.mp4"].motion_class == "fast"
    assert hits["pan.mp4"].camera_ratio > 0.6 > hits["square.mp4"].camera_ratio
    assert hits["still.mp4"].motion < hits["square.mp4"].motion < hits["pan.mp4"].motion
    assert [h.path.split("/")[-1] for h in search("x", k=3, library=lib, weights_root=weights, motion="still")] == ["still.mp4"]
    assert [h.path.split("/")[-1] for h in search("x", k=3, library=lib, weights_root=weights, motion="fast")] == ["pan.mp4"]
    with pytest.raises(InputError, match="motion must be"):
        search("x", library=lib, weights_root=weights, motion="warp")


def test_caption_words_rank_their_clip_first_and_urls_fetch_on_demand(tmp_path, weights, capsys):
    folder = _motion_folder(tmp_path)
    lib = tmp_path / "lib"
    index_folder(folder, lib, weights_root=weights)
    clip_only = [h.path for h in search("a dog on the beach", k=3, library=lib, weights_root=weights)]
    csv = folder / "captions.csv"
    csv.write_text(
        "path,caption,start,end\n"
        "still.mp4,a quiet lake at dawn,,\n"
        "pan.mp4,a dog runs on the beach,0,2\n"
        "square.mp4,a red toy slides,,\n"
        "http://127.0.0.1:9/giraffe.mp4,a giraffe eats leaves,0,4\n"
        "square.mp4,,,\n"
    )
    assert main(["library", "import-captions", str(csv), "--library", str(lib), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["bad_rows"]) == (4, 1)
    for words, expected in (("beach", "pan.mp4"), ("lake", "still.mp4"), ("toy", "square.mp4")):
        hits = search(f"a {words} scene", k=3, library=lib, weights_root=weights)
        assert hits[0].path.endswith(expected) and words in hits[0].caption, (words, [h.path for h in hits])
    # The word lifts the captioned clip above whatever CLIP alone ranked first.
    beach_last = search("a dog on the beach", k=3, library=lib, weights_root=weights, caption_weight=0)
    assert [h.path for h in beach_last] == clip_only
    remote = search("giraffe", k=3, library=lib, weights_root=weights)[0]
    assert remote.remote and remote.path.startswith("http://") and remote.thumbnail == ""
    from aas_core.library import fetch_remote

    with pytest.raises(InputError, match="offline"):
        fetch_remote(remote, lib, timeout=2)
    assert library_info(lib).captions == 4


def _web_folder(tmp_path):
    """What the test web server offers: a real clip (the shared bikes.mp4 when present), a text file named .mp4."""
    web = tmp_path / "web"
    web.mkdir()
    if (SHARED_CLIPS / "bikes.mp4").is_file():
        shutil.copy(SHARED_CLIPS / "bikes.mp4", web / "bikes.mp4")
    else:
        write_clip(web / "bikes.mp4", moving_square_frames("red", "right", frames=24), fps=8)
    (web / "notes.mp4").write_text("not a video at all")
    return web


def test_remote_hits_are_fetched_once_and_used_like_library_clips(tmp_path):
    from aas_core.library import fetch_hit, import_captions
    from aas_core.video_io import probe

    web, lib = _web_folder(tmp_path), tmp_path / "lib"
    duration = probe(web / "bikes.mp4").duration
    with serve_folder(web) as (base, requests):
        csv = tmp_path / "captions.csv"
        csv.write_text(f"url,caption,start,end\n{base}/bikes.mp4,people ride bikes down a street,0.5,1.5\n"
                       f"{base}/bikes.mp4?whole=1,a cyclist on a bridge,,\n")
        assert import_captions(csv, lib)["added"] == 2
        hit = search("bikes street", k=2, library=lib)[0]
        assert hit.remote and hit.path == f"{base}/bikes.mp4" and hit.thumbnail == "" and (hit.start, hit.end) == (0.5, 1.5)
        used = fetch_hit(hit, lib)
        # Downloaded into the library's remote cache under a hash name, then read like a library clip.
        assert Path(used.path).parent == lib / "remote-cache" and re.fullmatch(r"[0-9a-f]{24}\.mp4", Path(used.path).name)
        assert not used.remote and used.url == hit.path and (used.start, used.end) == (0.5, 1.5)
        assert (used.width, used.height) == (probe(web / "bikes.mp4").width, probe(web / "bikes.mp4").height) and used.fps > 0
        assert Path(used.path).read_bytes() == (web / "bikes.mp4").read_bytes()
        assert fetch_hit(hit, lib).path == used.path and fetch_hit(hit.to_dict(), lib)["path"] == used.path
        assert requests["/bikes.mp4"] == 1  # every later use reads the cache
        # A row without start/end stands for the whole clip; its dict form (as runs store hits) keeps its keys.
        whole = fetch_hit(search("cyclist bridge", k=1, library=lib)[0].to_dict(), lib)
        assert (whole["start"], whole["end"]) == (0.0, pytest.approx(duration, abs=0.05))
        assert whole["duration"] == pytest.approx(whole["end"], abs=0.01) and whole["remote"] is False
        assert not list((lib / "remote-cache").glob(".*"))  # no temp file left behind
    assert fetch_hit(used, lib) is used  # a local hit is used as it is



def test_concurrent_fetches_of_one_url_download_once_and_leave_no_lock_behind(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from aas_core.library import captions, fetch_remote

    web, lib = _web_folder(tmp_path), tmp_path / "lib"
    with serve_folder(web) as (base, requests):
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(lambda _: fetch_remote(f"{base}/bikes.mp4", lib), range(4)))
            refused = [f.exception() for f in [pool.submit(fetch_remote, f"{base}/notes.mp4", lib) for _ in range(3)]]
    assert len(set(paths)) == 1 and Path(paths[0]).is_file()
    assert requests["/bikes.mp4"] == 1  # the others waited for the first download and found the cache file
    assert all(isinstance(e, InputError) for e in refused)
    assert captions._FETCHING == {}  # a long-running app does not keep a lock per URL ever fetched


def test_remote_fetch_refusals_leave_nothing_behind(tmp_path):
    import http.server
    import time

    from aas_core.library import fetch_remote

    web, lib = _web_folder(tmp_path), tmp_path / "lib"
    cache = lib / "remote-cache"
    with pytest.raises(InputError) as offline:
        fetch_remote(f"http://127.0.0.1:{closed_port()}/clips/bikes.mp4", lib, timeout=5)
    message = str(offline.value)
    assert message.startswith("bikes.mp4 is a remote clip (http://127.0.0.1:") and "could not be downloaded: " in message
    assert "refused" in message and "connect to the internet" in message and "local path" in message
    with serve_folder(web) as (base, requests):
        with pytest.raises(InputError, match="notes.mp4 from .* is not a video this app can read"):
            fetch_remote(f"{base}/notes.mp4", lib)
        with pytest.raises(InputError, match="HTTP 404"):
            fetch_remote(f"{base}/gone.mp4", lib)
        with pytest.raises(InputError, match="bikes.mp4 is a remote clip .* of more than 1.0 KB, the download limit"):
            fetch_remote(f"{base}/bikes.mp4", lib, max_bytes=1000)
        # Nothing of the URL becomes a path: an odd path or extension gives a hash name ending in .mp4.
        local = fetch_remote(f"{base}/../%2e%2e/bikes.mp4?../../x.sh", lib)
        assert Path(local).parent == cache and re.fullmatch(r"[0-9a-f]{24}\.mp4", Path(local).name)
    assert [p.name for p in cache.iterdir()] == [Path(local).name]  # the refused downloads left no file
    with pytest.raises(InputError, match="names no host"):
        fetch_remote("http:///bikes.mp4", lib)

    class ToFile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/clip.mp4" if "ftp" in self.path else "file:///etc/passwd")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    class Silent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(3)  # longer than the read timeout below

        def log_message(self, *args) -> None:
            pass

    with serve(Silent) as base:
        with pytest.raises(InputError, match="slow.mp4 is a remote clip .* could not be downloaded: no answer within the time limit"):
            fetch_remote(f"{base}/slow.mp4", lib, timeout=1)
    with serve(ToFile) as base:
        with pytest.raises(InputError, match="non-web address"):
            fetch_remote(f"{base}/ftp.mp4", lib)
        with pytest.raises(InputError, match="not allowed"):
            fetch_remote(f"{base}/file.mp4", lib)
