"""The UI's glue, in process: story table <-> Story, sessions and their folders, weights notices, the compare grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aas_core.ui.config import AppConfig
from aas_core.ui.session import Sessions


def test_story_table_round_trip() -> None:
    """Drafted rows rebuild the same story; clip text, blank cells and <tokens> map to the schema."""
    from aas_core.story import ClipRef, draft_story
    from aas_core.ui.story import parse_clip, rows_of, story_of

    rows = rows_of(draft_story("a dog runs | <rex> runs on a beach | Run\ncity at night | a neon street", title="T"))
    assert rows[0][:5] == ["shot-01", "a dog runs", "<rex> runs on a beach", "Run", "auto"] and rows[0][5:] == ["", ""]
    rows[1][4], rows[1][6] = "/clips/a@b.mp4@1.5-4", "0.3"
    story = story_of("T", rows, "animatediff", 64, 64, 8, 2, "depth-anything-v2-small", "cut", 0.0, True, False, None)
    assert [c.name for c in story.characters] == ["rex"]
    assert story.shots[0].clip == "auto" and story.shots[0].generate is None and story.shots[0].seed is None
    assert story.shots[1].clip == ClipRef(path="/clips/a@b.mp4", start=1.5, end=4.0)
    assert story.shots[1].generate.strength == pytest.approx(0.3)
    assert story.defaults.generate.frames == 8 and story.defaults.transition == "cut"
    assert rows_of(story)[1][4] == "/clips/a@b.mp4@1.5-4" and parse_clip("") == "auto"


def test_story_table_rejects_bad_numbers() -> None:
    """A non-number seed is refused with a message naming the column."""
    import gradio as gr

    from aas_core.ui.story import story_of

    with pytest.raises(gr.Error, match="seed column"):
        story_of("", [["s1", "", "a cat", "", "auto", "abc", ""]], "animatediff", 64, 64, 8, 2,
                 "depth-anything-v2-small", "cut", 0.0, True, False, None)


def test_multi_user_sessions_get_private_folders(tmp_path: Path) -> None:
    """Each visitor gets own folders with models linked read-only; leaving deletes them; single-user shares paths."""
    base = tmp_path / "weights"
    (base / "sd15").mkdir(parents=True)
    config = AppConfig(weights_root=base, multi_user=True, cache_dir=tmp_path / "cache", sessions_dir=tmp_path / "s")
    sessions = Sessions(config)
    a, b = sessions.get("aaa"), sessions.get("bbb")
    assert a.weights_root != b.weights_root and a.library != b.library and a.outputs != b.outputs
    assert (a.weights_root / "sd15").resolve() == (base / "sd15").resolve()
    assert sessions.get("aaa") is a
    sessions.close("aaa")
    assert not a.folder.exists() and b.folder.exists() and len(sessions) == 1
    with pytest.raises(ValueError):
        sessions.get("../escape")
    single = Sessions(AppConfig(weights_root=base, library=tmp_path / "lib", cache_dir=tmp_path / "cache"))
    x, y = single.get("x"), single.get("y")
    assert x.weights_root == y.weights_root == base and x.library == y.library and not x.private


def test_cancel_token_is_per_job(tmp_path: Path) -> None:
    """Cancel stops the running job's token; a new job starts with a fresh one."""
    session = Sessions(AppConfig(weights_root=tmp_path, cache_dir=tmp_path)).get("x")
    first = session.new_job()
    session.cancel()
    assert first.cancelled and not session.new_job().cancelled


def test_missing_weights_named_with_download_command(tmp_path: Path) -> None:
    """Without weights (and without --tiny) the app still builds and each tab names what to download."""
    from aas_core.ui.app import build_app

    demo = build_app(AppConfig(weights_root=tmp_path / "empty", cache_dir=tmp_path / "cache"))
    texts = json.dumps(demo.get_config_file(), default=str)
    assert texts.count("Weights missing") == 5
    assert "python -m aas_core weights download sd15 animatediff-motion-adapter-v1-5-3" in texts
    assert "python -m aas_core weights download clip-vit-b-32" in texts
    assert "Workflow preview" not in texts


def test_grid_aligns_videos_of_different_lengths() -> None:
    """Four panels make a 2x2 grid as long as the longest video."""
    from aas_core.ui.compare import grid_frames

    videos = [np.full((n, 8, 10, 3), k * 60, np.uint8) for k, n in enumerate((8, 9, 8, 9))]
    grid = grid_frames(videos)
    assert grid.shape == (9, 16, 20, 3)
    assert grid[0, 0, 0, 0] == 0 and grid[0, 0, 10, 0] == 60 and grid[0, 8, 0, 0] == 120 and grid[8, 8, 10, 0] == 180


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
