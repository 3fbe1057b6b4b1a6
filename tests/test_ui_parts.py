"""The UI's parts in process, without a browser: the storyboard data, sessions (quota, idle cleanup, time limit,
shutdown), the job wrapper (cancel, messages), allowed paths, the compare grid."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from aas_core.errors import Cancelled, InputError
from aas_core.ui import board as boards
from aas_core.ui.config import AppConfig
from aas_core.ui.session import Sessions


def _board() -> list[dict]:
    from aas_core.story import draft_story

    return boards.board_from_story(draft_story("a dog runs | <rex> runs on a beach | Run\ncity at night | a neon street\nrain | rain on glass"))


def test_board_round_trip_to_story() -> None:
    """Cards rebuild the story: clips resolved by the given function, tokens become characters, numbers typed."""
    from aas_core.story import ClipRef

    board = boards.edit(boards.edit(_board(), "shot-02", "clip", "a@b.mp4@1.5-4"), "shot-02", "strength", "0.3")
    story = boards.story_from_board("T", board, boards.StorySettings.tiny(), lambda name: f"/resolved/{name}")
    assert [c.name for c in story.characters] == ["rex"]
    assert story.shots[0].clip == "auto" and story.shots[0].generate is None
    assert story.shots[1].clip == ClipRef(path="/resolved/a@b.mp4", start=1.5, end=4.0)
    assert story.shots[1].generate.strength == pytest.approx(0.3)
    assert story.defaults.generate.frames == 8
    with pytest.raises(InputError, match="shot-01: seed is 'abc'"):
        boards.edit(board, "shot-01", "seed", "abc")


def test_blank_prompts_are_named_up_front() -> None:
    """Generate all refuses a board with blank prompts and lists them (no silent skip)."""
    board = boards.edit(boards.edit(_board(), "shot-01", "prompt", " "), "shot-03", "prompt", "")
    with pytest.raises(InputError, match="write a prompt for shot-01, shot-03 first"):
        boards.story_from_board("", board, boards.StorySettings(), str)


def test_cards_reorder_add_delete() -> None:
    """Up/down moves, add gives a fresh id, delete removes; ids stay with their shots."""
    board = boards.move(_board(), "shot-03", -1)
    assert [c["id"] for c in board] == ["shot-01", "shot-03", "shot-02"]
    assert [c["id"] for c in boards.move(board, "shot-01", -1)] == ["shot-01", "shot-03", "shot-02"]
    board = boards.add(boards.delete(board, "shot-01"))
    assert [c["id"] for c in board] == ["shot-03", "shot-02", "shot-04"]


def test_takes_are_kept_and_picked() -> None:
    """Each new take is added and picked; an earlier one can be picked back; stitching takes the pick, not the card's edits."""
    board = _board()
    for seed in (5, 6):
        board = boards.add_take(board, "shot-01", {"video": f"v{seed}.mp4", "seed": seed, "prompt": "old prompt", "clip": "auto",
                                                  "strength": 0.4, "settings": {"frames": 8}})
    card = boards.find(board, "shot-01")
    assert len(card["takes"]) == 2 and card["pick"] == 1 and card["status"] == "take 2 of 2"
    board = boards.pick(boards.edit(board, "shot-01", "prompt", "new prompt"), "shot-01", 0)
    takes = boards.picked_takes(board, boards.StorySettings(), str)
    assert [(t.shot, t.video, t.prompt) for t in takes] == [("shot-01", "v5.mp4", "old prompt")]
    with pytest.raises(InputError, match="2 takes"):
        boards.pick(board, "shot-01", 7)


def test_picked_takes_are_what_stitch_assembles() -> None:
    """The Stitch button's takes: each card's pick (number, files through the resolver), caption and transition."""
    board = _board()
    for seed in (5, 6):
        board = boards.add_take(board, "shot-01", {"video": f"v{seed}.mp4", "comparison": f"c{seed}.mp4", "seed": seed,
                                                  "prompt": f"take {seed}", "clip": "bunny.mp4@1-3", "metrics": {"frame_consistency": 0.9}})
    board = boards.add_take(board, "shot-03", {"video": "w.mp4", "prompt": "rain", "clip": "auto"})
    board = boards.pick(board, "shot-01", 0)
    settings = boards.StorySettings(transition="fade_black", transition_s=1.0)
    takes = boards.picked_takes(board, settings, lambda name: f"/session/{name}", tiny=True)
    assert [(t.shot, t.number, t.video, t.prompt) for t in takes] == [("shot-01", 1, "/session/v5.mp4", "take 5"),
                                                                     ("shot-03", 1, "/session/w.mp4", "rain")]
    assert takes[0].comparison == "/session/c5.mp4" and takes[0].caption == "Run" and takes[0].metrics == {"frame_consistency": 0.9}
    assert (takes[0].transition, takes[0].transition_duration, takes[0].tiny) == ("fade_black", 1.0, True)
    assert takes[0].clip == {"path": "bunny.mp4", "start": 1.0, "end": 3.0} and takes[1].clip == {}

    def guard(name: str) -> str:
        raise InputError(f"{name} is not yours")

    with pytest.raises(InputError, match="v5.mp4 is not yours"):
        boards.picked_takes(board, settings, guard)
    with pytest.raises(InputError, match="no shot has a take yet"):
        boards.picked_takes(_board(), settings, str)


def test_project_state_line_round_trip() -> None:
    """The app's state rides on the first comment line; a plain story file has none."""
    from aas_core.story import parse_story

    board = boards.add_take(_board(), "shot-02", {"video": "v.mp4", "seed": 1})
    settings = boards.StorySettings(frames=12, transition="cut", music="song.mp3")
    text = boards.project_text("title: T\nshots:\n- prompt: a\n", "the story text", settings, board)
    state = boards.app_state(text)
    assert state["text"] == "the story text" and state["settings"]["frames"] == 12
    assert state["takes"]["shot-02"]["pick"] == 0
    assert parse_story(text).title == "T" and boards.app_state("title: x") == {}


def test_settings_object_refuses_unknown_and_bad_fields() -> None:
    """One settings object replaces the 14 arguments; bad fields are named."""
    assert boards.StorySettings.parse({"frames": "12", "captions": 0}).frames == 12
    with pytest.raises(InputError, match="unknown setting"):
        boards.StorySettings.parse({"framez": 1})
    with pytest.raises(InputError, match="setting width"):
        boards.StorySettings.parse({"width": "wide"})


def _multi(tmp_path: Path, **extra) -> AppConfig:
    base = tmp_path / "weights"
    (base / "sd15").mkdir(parents=True, exist_ok=True)
    return AppConfig(weights_root=base, multi_user=True, cache_dir=tmp_path / "cache", sessions_dir=tmp_path / "s", **extra)


def test_multi_user_sessions_get_private_folders(tmp_path: Path) -> None:
    """Each visitor gets own folders with models linked read-only; leaving deletes them; single-user shares paths."""
    sessions = Sessions(_multi(tmp_path))
    a, b = sessions.get("aaa"), sessions.get("bbb")
    assert a.weights_root != b.weights_root and a.library != b.library and a.outputs != b.outputs
    assert (a.weights_root / "sd15").resolve() == (tmp_path / "weights" / "sd15").resolve()
    assert sessions.get("aaa") is a
    sessions.close("aaa")
    assert not a.folder.exists() and b.folder.exists() and len(sessions) == 1
    with pytest.raises(ValueError):
        sessions.get("../escape")
    single = Sessions(AppConfig(weights_root=tmp_path / "weights", library=tmp_path / "lib", cache_dir=tmp_path / "cache"))
    x, y = single.get("x"), single.get("y")
    assert x.weights_root == y.weights_root and x.library == y.library and not x.private


def test_plain_http_sessions_go_after_a_short_idle_time(tmp_path: Path) -> None:
    """A session without a page is swept after the API idle time; a browser one stays; a running one is never swept."""
    sessions = Sessions(_multi(tmp_path, api_session_ttl_s=1, session_ttl_s=3600))
    api, page, busy = sessions.get("api"), sessions.get("page", browser=True), sessions.get("busy")
    busy.new_job("long")
    time.sleep(1.3)
    sessions.sweep()
    assert not api.folder.exists() and page.folder.exists() and busy.folder.exists()
    busy.end_job()
    time.sleep(1.3)
    sessions.sweep()
    assert not busy.folder.exists()


def test_shutdown_removes_every_session_folder(tmp_path: Path) -> None:
    """close_all (the SIGTERM/SIGINT handler) cancels jobs and removes the run's whole folder."""
    sessions = Sessions(_multi(tmp_path))
    a = sessions.get("a")
    token = a.new_job("x")
    sessions.get("b")
    sessions.close_all()
    assert token.cancelled and not sessions.root.exists() and len(sessions) == 0


def test_upload_quota_counts_every_upload(tmp_path: Path) -> None:
    """Bytes and files are counted over all of a visitor's uploads, not per file."""
    sessions = Sessions(_multi(tmp_path))
    s = sessions.get("q")
    files = []
    for i in range(3):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(b"x" * 400)
        files.append(f)
    stored = s.store_uploads("clips", files[:2], quota_bytes=1000, quota_files=10)
    assert [p.name for p in stored] == ["f0.bin", "f1.bin"] and s.uploaded_bytes == 800
    with pytest.raises(InputError, match="upload limit of 0 MB"):
        s.store_uploads("clips", files[2:], quota_bytes=1000, quota_files=10)
    with pytest.raises(InputError, match="limit of 2 uploaded files"):
        s.store_uploads("clips", files[2:], quota_bytes=None, quota_files=2)


def test_job_time_limit_cancels_the_job(tmp_path: Path) -> None:
    """A job past its time limit is cancelled and marked as timed out; a finished job's timer never fires."""
    s = Sessions(_multi(tmp_path)).get("t")
    token = s.new_job("slow", time_limit_s=0.2)
    time.sleep(0.5)
    assert token.cancelled and s.timed_out
    quick = s.new_job("quick", time_limit_s=0.2)
    s.end_job()
    time.sleep(0.4)
    assert not quick.cancelled and not s.cancel()


def test_job_handler_cancel_keeps_outputs_and_errors_hide_paths(tmp_path: Path) -> None:
    """Cancelled -> outputs skipped, no error; other errors -> one gr.Error with server paths reduced to base names."""
    import gradio as gr

    from aas_core.ui.common import UIContext, job_handler

    config = _multi(tmp_path)
    config._ready.set()
    ctx = UIContext(config=config, sessions=Sessions(config), selected_clip=None, depth_ref=None, concepts_changed=None)

    def cancelled(ctx, x):
        raise Cancelled("cancelled by the user; finished work was kept")

    def broken(ctx, x):
        raise InputError(f"clip {tmp_path}/s/run-1/abc/uploads/clips-1/bikes.mp4 is missing")

    skipped = job_handler(ctx, cancelled, outputs=2)(1)
    assert isinstance(skipped, tuple) and len(skipped) == 2 and all(isinstance(v, dict) and v.get("__type__") == "update" for v in skipped)
    with pytest.raises(gr.Error) as info:
        job_handler(ctx, broken, outputs=1)(1)
    assert info.value.message == "clip bikes.mp4 is missing"
    import inspect

    assert list(inspect.signature(job_handler(ctx, broken, outputs=1)).parameters) == ["x"]


def test_allowed_paths_multi_user_serve_samples_only(tmp_path: Path) -> None:
    """Multi-user: gradio may serve the public samples and nothing else by path (no weights/concepts, no sessions)."""
    from aas_core.ui.app import allowed_paths
    from aas_core.ui.samples import SAMPLES_DIR

    assert allowed_paths(_multi(tmp_path)) == [str(SAMPLES_DIR)]
    local = allowed_paths(AppConfig(weights_root=tmp_path / "w", library=tmp_path / "lib", cache_dir=tmp_path / "c"))
    assert str(tmp_path / "w" / "concepts") in local


def test_samples_are_real_footage_and_small() -> None:
    """Three short Big Buck Bunny cuts and three stills ship with the app, well under 1 MB in all."""
    from aas_core.ui.samples import SAMPLE_CLIPS, SAMPLES_DIR, sample_clips, sample_photos
    from aas_core.video_io import probe

    clips = sorted(sample_clips().glob("*.mp4"))
    assert [c.name for c in clips] == sorted(SAMPLE_CLIPS)
    assert all(1.0 < probe(c).duration < 2.5 and probe(c).width == 320 for c in clips)
    assert len(sample_photos()) == 3 and all(Path(p).is_file() for p in sample_photos())
    assert sum(f.stat().st_size for f in SAMPLES_DIR.rglob("*") if f.is_file()) < 1_000_000


def test_missing_weights_named_with_download_command_locally_only(tmp_path: Path) -> None:
    """Without weights the app builds; locally each tab names the command, in multi-user mode no command at all."""
    from aas_core.ui.app import build_app

    demo = build_app(AppConfig(weights_root=tmp_path / "empty", cache_dir=tmp_path / "cache"))
    texts = json.dumps(demo.get_config_file(), default=str)
    assert texts.count("Weights missing") == 5
    assert "python -m aas_core weights download sd15 animatediff-motion-adapter-v1-5-3" in texts
    assert "Workflow preview" not in texts
    web = json.dumps(build_app(AppConfig(weights_root=tmp_path / "empty", cache_dir=tmp_path / "cache", multi_user=True,
                                         sessions_dir=tmp_path / "s")).get_config_file(), default=str)
    assert "Models missing" in web and "python -m" not in web and str(tmp_path) not in web


def test_grid_aligns_and_labels_panels() -> None:
    """Four panels make a 2x2 grid as long as the longest video; labels darken a bar at the top of each panel."""
    from aas_core.ui.compare import grid_frames

    videos = [np.full((n, 40, 50, 3), 60 + k * 40, np.uint8) for k, n in enumerate((8, 9, 8, 9))]
    grid = grid_frames(videos)
    assert grid.shape == (9, 80, 100, 3)
    assert grid[0, 20, 0, 0] == 60 and grid[0, 20, 50, 0] == 100 and grid[0, 60, 0, 0] == 140 and grid[8, 60, 50, 0] == 180
    labelled = grid_frames(videos, ["1: a", "2: b", "3: c", "4: d"])
    assert labelled[0, 2, 2, 0] < 60 and labelled[0, 30, 2, 0] == 60


def test_tiny_weights_failure_is_reported_then_retried(tmp_path: Path, tiny_root: Path) -> None:
    """A failed tiny write reaches the user as an error naming the folder, and the next action tries again."""
    from aas_core.errors import WeightsMissingError
    from aas_core.ui.config import TINY_MODELS
    from tests.helpers import ensure_tiny

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the tiny weights folder should be")
    config = AppConfig(weights_root=blocker, tiny=True, cache_dir=tmp_path)
    with pytest.raises(WeightsMissingError, match="could not write the tiny models"):
        config.wait_ready(timeout=120)
    assert not config.ready
    config.weights_root = ensure_tiny(tiny_root, *TINY_MODELS)  # shared with the engine tests: usually written already
    config.wait_ready(timeout=300)
    assert config.ready


def test_text_limits_come_from_aas_core_limits() -> None:
    """An over-long prompt typed into a card is refused with the shared limit's message."""
    from aas_core.limits import MAX_PROMPT_CHARS

    with pytest.raises(InputError, match=f"shot-01 prompt is {MAX_PROMPT_CHARS + 1:,} characters long"):
        boards.edit(_board(), "shot-01", "prompt", "x" * (MAX_PROMPT_CHARS + 1))


def test_plan_with_ai_falls_back_to_sentences_with_a_warning(tmp_path: Path) -> None:
    """Plan with AI without a usable model (here: not downloaded, as in --tiny; the random tiny Qwen takes a minute to
    fail the same way in tests/test_planner.py) -> one shot per sentence on the board, the warning shown."""
    from aas_core.ui import story
    from aas_core.ui.common import UIContext

    config = AppConfig(weights_root=tmp_path / "weights", cache_dir=tmp_path)
    ctx = UIContext(config=config, sessions=Sessions(config), selected_clip=None, depth_ref=None, concepts_changed=None)
    seen: list[str] = []
    text = "A fox runs through snow. It stops at a river. It looks back."
    with pytest.warns(UserWarning, match="no usable plan"):
        board, version, _, status = story.plan(ctx, text, "Fox", None, None, progress=lambda f, desc="": seen.append(desc))
    assert [c["prompt"] for c in board] == [s.prompt for s in boards.story_from_board("Fox", board, boards.StorySettings(), str).shots]
    assert len(board) == 3 and "fox runs through snow" in board[0]["prompt"].lower() and version > 0
    assert status.startswith("Planned 3 shot(s) with the sentences planner.") and "no usable plan" in status
    assert seen and all(d.startswith("Planning") for d in seen)
    with pytest.raises(InputError, match="empty"):
        story.plan(ctx, "  ", "", None, None, progress=lambda f, desc="": None)


def test_speed_preset_setting_reaches_every_shot_and_each_take() -> None:
    """The Story settings' preset (default: default_preset()) becomes the story's generate preset and is kept per take."""
    from aas_core.generate import PRESETS, default_preset

    assert boards.StorySettings().preset == default_preset() and "fast" in PRESETS
    settings = boards.StorySettings.parse({"preset": "fast"})
    assert boards.story_from_board("t", _board(), settings, str).defaults.generate.preset == "fast"
    take = boards.take_of(_board()[0], settings, type("Outcome", (), {"video": "v.mp4", "comparison": None, "seed": 1})(), str, None)
    assert take["settings"]["preset"] == "fast"
    with pytest.raises(ValueError, match="preset"):
        boards.story_from_board("t", _board(), boards.StorySettings.parse({"preset": "turbo"}), str)


def test_hits_show_motion_and_caption_and_galleries_skip_remote_hits() -> None:
    """Library/story hits: motion class, amount and caption in the label and table; a hit without a thumbnail (a remote
    caption hit) stays in the table but not in the gallery, so a gallery click still picks the hit it shows."""
    from aas_core.ui.common import hit_details, with_thumbnails
    from aas_core.ui.library import hit_label, hits_markdown

    local = {"rank": 1, "score": 0.5, "start": 0.0, "end": 2.0, "path": "/x/dog.mp4", "thumbnail": "/x/t.jpg",
             "motion_class": "high", "motion": 0.734, "caption": "a dog | runs " + "far " * 40}
    remote = {"rank": 2, "score": 0.4, "start": 0.0, "end": 3.0, "path": "https://e.org/cat.mp4", "thumbnail": "",
              "motion_class": "", "motion": 0.0, "caption": "a cat sleeps"}
    plain = {**local, "motion_class": "", "caption": ""}
    assert hit_label(local).startswith("#1 · score 0.500") and "high motion 0.73" in hit_label(local) and "a dog" in hit_label(local)
    assert len(hit_details(local).split("“")[1]) == 81 and hit_details(local).endswith("…”") and hit_details(plain) == ""
    assert hit_label(plain).endswith("dog.mp4")
    table = hits_markdown([local, remote])
    assert "| motion, caption |" in table and "“a cat sleeps”" in table and "a dog / runs" in table
    assert with_thumbnails([local, remote, plain]) == [local, plain]


def test_zero_gpu_budgets_follow_the_job(monkeypatch) -> None:
    """Generate asks ZeroGPU for the engine's estimate of the job, not a fixed minute count."""
    import sys
    import types

    from aas_core.generate import ShotSpec, estimate_gpu_seconds
    from aas_core.ui import common
    from aas_core.ui.story import ALL_SHOTS_GPU_CAP_S, all_shots_budget, one_shot_budget

    fast, standard = boards.StorySettings(preset="fast").to_dict(), boards.StorySettings(preset="standard").to_dict()
    board = _board()
    assert one_shot_budget("t", board, board[0]["id"], standard) == estimate_gpu_seconds(
        ShotSpec(prompt="x", frames=16, width=512, height=512, preset="standard", steps=25))
    assert one_shot_budget("t", board, board[0]["id"], fast) < one_shot_budget("t", board, board[0]["id"], standard)
    assert all_shots_budget("t", board, standard) == min(ALL_SHOTS_GPU_CAP_S, len(board) * one_shot_budget("t", board, "", standard))
    bigger = boards.StorySettings(preset="standard", frames=32, width=768, height=768).to_dict()
    assert one_shot_budget("t", board, "", bigger) > one_shot_budget("t", board, "", standard)

    # On ZeroGPU hardware the handler's own arguments reach the budget function (spaces' dynamic duration).
    seen: dict = {}

    def gpu(duration):
        def attach(fn):
            def call(*args, **kwargs):
                seen["seconds"] = duration(*args, **kwargs) if callable(duration) else duration
                return fn(*args, **kwargs)
            return call
        return attach

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    wrapped = common._zero_gpu(lambda title, board, shot_id, settings: "made", one_shot_budget)
    assert wrapped("t", board, board[0]["id"], fast) == "made"
    assert seen["seconds"] == one_shot_budget("t", board, board[0]["id"], fast)


def test_status_shows_why_each_auto_clip_was_chosen() -> None:
    from aas_core.story.outcome import ShotOutcome, StoryRun
    from aas_core.ui.story import status_markdown

    auto = ShotOutcome(id="s1", status="done", clip={"path": "a.mp4", "choice": {
        "reasons": ["match 0.312 for the query", "long enough: 3.00 s for a 2.00 s shot"], "reused": False}})
    pinned = ShotOutcome(id="s2", status="done", clip={"path": "b.mp4", "choice": None})
    text = status_markdown(StoryRun(out_dir="x", shots=[auto, pinned]), tiny=False)
    assert "**s1** clip chosen automatically: match 0.312 for the query; long enough: 3.00 s" in text
    assert "**s2** clip chosen" not in text


def test_web_clip_hits_are_fetched_into_the_visitors_library_when_picked(tmp_path: Path) -> None:
    """Multi-user: a captioned web clip shows in the galleries with a stand-in image; picking it (Clip Library or a Story
    candidate) downloads it once into the visitor's own library, where the path guard accepts it; offline, a clear error."""
    import gradio as gr

    from aas_core.library import import_captions
    from aas_core.paths import resolve_visitor_path
    from aas_core.ui import library as library_tab
    from aas_core.ui import story as story_tab
    from aas_core.ui.common import UIContext
    from tests.helpers import closed_port, moving_square_frames, serve_folder, write_clip

    config = _multi(tmp_path)
    config._ready.set()
    ctx = UIContext(config=config, sessions=Sessions(config), selected_clip=None, depth_ref=None, concepts_changed=None)
    visitor, other = (type("Request", (), {"session_hash": name})() for name in ("visitor", "other"))
    session = ctx.session(visitor)
    web = tmp_path / "web"
    write_clip(web / "giraffe.mp4", moving_square_frames("yellow", "up", frames=16), fps=8)
    dead = f"http://127.0.0.1:{closed_port()}/zebra.mp4"
    with serve_folder(web) as (base, requests):
        csv = tmp_path / "captions.csv"
        csv.write_text(f"url,caption,start,end\n{base}/giraffe.mp4,a giraffe eats leaves,0.5,1.5\n{dead},a zebra crosses the road,,\n")
        import_captions(csv, session.library)
        hits, gallery, table, *_ = library_tab.search(ctx, "giraffe leaves", None, 4, 0, visitor)
        assert [h["path"] for h in hits] == [f"{base}/giraffe.mp4"] and gallery[0][0] == hits[0]["thumbnail"]
        assert Path(hits[0]["thumbnail"]).is_file() and "giraffe.mp4" in gallery[0][1] and "giraffe.mp4" in table
        preview, text, clip = library_tab.pick(ctx, hits, visitor, gr.SelectData(None, {"index": 0, "value": None}))
        cached = session.library / "remote-cache"
        assert Path(clip["path"]).parent == cached and clip["url"] == f"{base}/giraffe.mp4" and (clip["start"], clip["end"]) == (0.5, 1.5)
        assert Path(preview).is_file() and "Selected **giraffe.mp4**" in text and "Downloaded from" in text
        # The guard accepts the download as the visitor's own file, and no other visitor's.
        assert ctx.resolve(session, clip["path"]) == Path(clip["path"]).resolve()
        with pytest.raises(InputError, match="not one of your uploads"):
            ctx.resolve(ctx.session(other), clip["path"])
        with pytest.raises(InputError, match="not one of your uploads"):
            resolve_visitor_path(f"{base}/giraffe.mp4", session.folder, config.samples_dir)  # a typed URL is no file
        # A story candidate: the same web clip becomes the shot's clip under its short name; the cache serves it.
        board, shot = [boards.new_shot("shot-01", prompt="a giraffe", query="giraffe leaves")], "shot-01"
        shown, _ = story_tab.find_clips(ctx, board, shot, visitor)
        assert shown[0]["url"] == f"{base}/giraffe.mp4" and shown[0]["name"] == ""
        board, _ = story_tab.pick_candidate(ctx, shown, board, shot, gr.SelectData(None, {"index": 0, "value": None}), visitor)
        name, start, end = boards.parse_clip(boards.find(board, shot)["clip"])
        assert ctx.resolve(session, name) == Path(clip["path"]).resolve() and (start, end) == (0.5, 1.5)
        assert requests["/giraffe.mp4"] == 1
        # Offline: the click says which clip, why, and what to do.
        zebra, *_ = library_tab.search(ctx, "zebra road", None, 4, 0, visitor)
        with pytest.raises(InputError, match=r"zebra.mp4 is a remote clip \(http://127.0.0.1:\d+/zebra.mp4\) and could not be downloaded"):
            library_tab.pick(ctx, zebra, visitor, gr.SelectData(None, {"index": 0, "value": None}))




def test_web_clip_downloads_count_against_the_visitors_upload_quota(tmp_path: Path) -> None:
    """Multi-user: each new web clip download counts as an uploaded file of its size; a cached one costs nothing;
    past the quota the click is refused and nothing is written."""
    import gradio as gr

    from aas_core.library import import_captions
    from aas_core.ui import library as library_tab
    from aas_core.ui.common import UIContext
    from tests.helpers import moving_square_frames, serve_folder, write_clip

    config = _multi(tmp_path, quota_files=2)
    config._ready.set()
    ctx = UIContext(config=config, sessions=Sessions(config), selected_clip=None, depth_ref=None, concepts_changed=None)
    visitor = type("Request", (), {"session_hash": "visitor"})()
    session = ctx.session(visitor)
    web = tmp_path / "web"
    for name, colour in (("giraffe", "yellow"), ("zebra", "white"), ("hippo", "blue")):
        write_clip(web / f"{name}.mp4", moving_square_frames(colour, "up", frames=16), fps=8)
    click = gr.SelectData(None, {"index": 0, "value": None})
    with serve_folder(web) as (base, requests):
        (tmp_path / "captions.csv").write_text("url,caption\n" + "".join(f"{base}/{n}.mp4,a {n} eats leaves\n" for n in ("giraffe", "zebra", "hippo")))
        import_captions(tmp_path / "captions.csv", session.library)
        cache = session.library / "remote-cache"

        def pick(name: str) -> dict:
            hits, *_ = library_tab.search(ctx, f"{name} eats", None, 1, 0, visitor)
            assert hits[0]["path"] == f"{base}/{name}.mp4"
            return library_tab.pick(ctx, hits, visitor, click)[2]

        giraffe = pick("giraffe")
        assert (session.uploaded_files, session.uploaded_bytes) == (1, Path(giraffe["path"]).stat().st_size)
        pick("giraffe")  # cached: no new download, no charge
        assert session.uploaded_files == 1 and requests["/giraffe.mp4"] == 1
        session.uploaded_bytes = config.quota_mb * 1_000_000 - 100  # as if uploads had used all but 100 bytes
        with pytest.raises(InputError, match=r"zebra.mp4 is larger than what is left of your limit of 500 MB .*\(500.0 MB used\)"):
            pick("zebra")
        assert sorted(p.name for p in cache.iterdir()) == [Path(giraffe["path"]).name]  # nothing half-written
        session.uploaded_bytes = 0
        pick("zebra")
        with pytest.raises(InputError, match="would pass your limit of 2 files"):
            pick("hippo")
        assert requests["/hippo.mp4"] == 0 and session.uploaded_files == 2


def test_motion_structure_fetches_a_picked_web_clip_again_when_its_download_was_removed(tmp_path: Path, tiny_root: Path) -> None:
    """A web clip picked in Clip Library whose cached download is gone (cache cleared, session restored) is fetched
    again into the visitor's library when Motion Structure extracts its depth; offline, the click says why."""
    import gradio as gr

    from aas_core.depth import DEFAULT_ESTIMATOR
    from aas_core.library import import_captions
    from aas_core.ui import depth as depth_tab
    from aas_core.ui import library as library_tab
    from aas_core.ui.common import UIContext
    from tests.helpers import ensure_tiny, moving_square_frames, serve_folder, write_clip

    config = AppConfig(weights_root=ensure_tiny(tiny_root, DEFAULT_ESTIMATOR), multi_user=True, cache_dir=tmp_path / "cache",
                       sessions_dir=tmp_path / "s")
    config._ready.set()
    ctx = UIContext(config=config, sessions=Sessions(config), selected_clip=None, depth_ref=None, concepts_changed=None)
    visitor = type("Request", (), {"session_hash": "visitor"})()
    session = ctx.session(visitor)
    web = tmp_path / "web"
    write_clip(web / "giraffe.mp4", moving_square_frames("yellow", "up", frames=16), fps=8)
    with serve_folder(web) as (base, requests):
        (tmp_path / "captions.csv").write_text(f"url,caption\n{base}/giraffe.mp4,a giraffe eats leaves\n")
        import_captions(tmp_path / "captions.csv", session.library)
        hits, *_ = library_tab.search(ctx, "giraffe leaves", None, 4, 0, visitor)
        _, _, clip = library_tab.pick(ctx, hits, visitor, gr.SelectData(None, {"index": 0, "value": None}))
        Path(clip["path"]).unlink()
        side, sheet, figures, ref = depth_tab.extract(ctx, clip, None, 0, None, 1.0, "crop", 64, 64, 4, DEFAULT_ESTIMATOR, 0.0, visitor)
        assert requests["/giraffe.mp4"] == 2 and Path(clip["path"]).is_file()  # fetched again, to the same cache file
        assert Path(side).is_file() and Path(sheet).is_file() and "4 frames" in figures
        assert ref["path"] == str(Path(clip["path"]).resolve()) and ref["label"] == clip["label"]
    Path(clip["path"]).unlink()  # and now the server is gone too
    with pytest.raises(InputError, match="giraffe.mp4 is a remote clip .* could not be downloaded"):
        depth_tab.extract(ctx, clip, None, 0, None, 1.0, "crop", 64, 64, 4, DEFAULT_ESTIMATOR, 0.0, visitor)


def test_example_story_names_the_sample_character_made_at_once(tmp_path: Path, tiny_root: Path) -> None:
    """The example's prompts name <bunny>: it is made from the sample stills (instant) when missing, and a visitor's
    own <bunny> is never replaced; a story without the token makes nothing."""
    from types import SimpleNamespace

    from aas_core.concepts import list_concepts, load_concept
    from aas_core.ui.samples import SAMPLE_CHARACTER, sample_photos
    from aas_core.ui.story import EXAMPLE_TITLE, example_board, sample_character
    from tests.test_concepts import concept_root

    session = SimpleNamespace(weights_root=concept_root(tiny_root, tmp_path, "ip-adapter-sd15"))
    story = boards.story_from_board(EXAMPLE_TITLE, example_board(), boards.StorySettings.tiny(), str)
    assert [c.name for c in story.characters] == [SAMPLE_CHARACTER[0]]
    assert all(f"<{SAMPLE_CHARACTER[0]}>" in s.prompt for s in story.shots)
    plain = boards.story_from_board("t", _board(), boards.StorySettings.tiny(), str)
    assert sample_character(session, plain) is None and list_concepts(session.weights_root) == []

    assert "<bunny>" in (sample_character(session, story) or "")
    made = load_concept("bunny", session.weights_root)
    assert made.class_word == "rabbit" and made.method == "ip-adapter" and len(made.photos) == len(sample_photos())
    stamp = (session.weights_root / "concepts" / "bunny").stat().st_mtime_ns
    assert sample_character(session, story) is None  # already there: kept as it is
    assert (session.weights_root / "concepts" / "bunny").stat().st_mtime_ns == stamp
