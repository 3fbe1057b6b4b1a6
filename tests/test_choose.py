"""Whole-story clip choice: fitting clips, no footage shared between shots unless unavoidable, reasons recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from aas_core.library import ClipHit
from aas_core.story.choose import Need, Span, choose_clips
from tests.helpers import closed_port, ensure_tiny, moving_square_frames, serve_folder, write_clip

MODELS = ("clip-vit-b-32", "depth-anything-v2-small", "sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15")


def hit(path: str, start: float, end: float, score: float, width: int = 512, height: int = 512, **extra) -> dict:
    """A search hit in ClipHit.to_dict() form."""
    data = ClipHit(path=path, start=start, end=end, score=score, thumbnail="", fps=8.0, width=width, height=height).to_dict()
    return {**data, **extra}


def need(shot_id: str, seconds: float = 2.0, aspect: float = 1.0) -> Need:
    return Need(id=shot_id, seconds=seconds, aspect=aspect)


def test_two_shots_wanting_the_same_clip_get_different_footage():
    a, b, c = hit("/lib/a.mp4", 0, 4, 0.31), hit("/lib/b.mp4", 0, 4, 0.28), hit("/lib/c.mp4", 0, 4, 0.27)
    # shot-02 matches `a` better than shot-01 does, so the story gives `a` to shot-02.
    choice = choose_clips([need("shot-01"), need("shot-02")], {"shot-01": [dict(a, score=0.30), b], "shot-02": [a, c]})
    assert choice["shot-02"].hit["path"] == "/lib/a.mp4"
    assert choice["shot-01"].hit["path"] == "/lib/b.mp4"
    assert not choice["shot-01"].reused and not choice["shot-02"].reused
    lost = choice["shot-01"].rejected[0]
    assert lost["path"] == "/lib/a.mp4" and lost["why"] == "already used by shot-02"
    assert choice["shot-02"].reasons[0] == "match 0.310 for the query"


def test_overlapping_spans_of_one_file_count_as_the_same_footage():
    first, overlapping, later = hit("/lib/a.mp4", 0, 3, 0.30), hit("/lib/a.mp4", 2.5, 5, 0.29), hit("/lib/a.mp4", 5, 8, 0.20)
    choice = choose_clips([need("s1"), need("s2")], {"s1": [first], "s2": [overlapping, later]})
    assert (choice["s1"].hit["start"], choice["s2"].hit["start"]) == (0, 5)
    assert any("same source file as s1" in r for r in choice["s2"].reasons)


def test_duration_is_respected():
    short, long_enough = hit("/lib/short.mp4", 0, 1.0, 0.40), hit("/lib/long.mp4", 10, 13, 0.25)
    choice = choose_clips([need("s1", seconds=2.0)], {"s1": [short, long_enough]})
    assert choice["s1"].hit["path"] == "/lib/long.mp4"
    assert choice["s1"].rejected == [{"path": "/lib/short.mp4", "start": 0, "end": 1.0, "score": 0.40,
                                      "why": "too short: 1.00 s for a 2.00 s shot"}]
    assert "long enough: 3.00 s for a 2.00 s shot" in choice["s1"].reasons


def test_nothing_fits_takes_the_best_match_and_says_why():
    choice = choose_clips([need("s1", seconds=5.0)], {"s1": [hit("/lib/a.mp4", 0, 1, 0.2), hit("/lib/b.mp4", 0, 2, 0.3)]})
    assert choice["s1"].hit["path"] == "/lib/b.mp4" and "no candidate fits" in choice["s1"].reasons[0]


def test_pinned_footage_is_left_to_its_shot():
    pinned = [Span("/lib/a.mp4", 1.0, None, owner="shot-03")]
    choice = choose_clips([need("s1")], {"s1": [hit("/lib/a.mp4", 2, 6, 0.4), hit("/lib/b.mp4", 0, 3, 0.2)]}, pinned)
    assert choice["s1"].hit["path"] == "/lib/b.mp4"
    assert choice["s1"].rejected[0]["why"] == "footage pinned by shot-03"


def test_reuse_only_when_no_unused_clip_fits():
    only = hit("/lib/a.mp4", 0, 4, 0.3)
    choice = choose_clips([need("s1"), need("s2")], {"s1": [only], "s2": [only, hit("/lib/b.mp4", 0, 1, 0.5)]})
    reused = [c for c in choice.values() if c.reused]
    assert len(reused) == 1 and "reused: every fitting clip is already used" in reused[0].reasons[-1]
    assert choice["s2"].hit["path"] == "/lib/a.mp4"  # b is too short, so s2 shares a with s1
    assert choice["s2"].to_dict()["reused"] is True


def test_aspect_breaks_near_ties_and_still_footage_is_skipped():
    wide, square = hit("/lib/wide.mp4", 0, 4, 0.300, 1920, 1080), hit("/lib/square.mp4", 0, 4, 0.295, 512, 512)
    choice = choose_clips([need("s1", aspect=1.0)], {"s1": [wide, square]})
    assert choice["s1"].hit["path"] == "/lib/square.mp4" and "aspect 1.00 for a 1.00 output (same shape)" in choice["s1"].reasons
    still = hit("/lib/still.mp4", 0, 4, 0.5, motion=0.001, motion_class="still")
    moving = hit("/lib/moving.mp4", 0, 4, 0.2, motion=0.05, motion_class="slow")
    choice = choose_clips([need("s1")], {"s1": [still, moving]})
    assert choice["s1"].hit["path"] == "/lib/moving.mp4"
    assert choice["s1"].rejected[0]["why"].startswith("still footage")
    assert "slow motion (0.050 frame widths/s)" in choice["s1"].reasons


def test_clip_similarity_ranks_when_the_library_fused_caption_scores():
    # Rank-fusion scores (~1/61) say little about how well a clip fits; the CLIP cosine does.
    fused_first = hit("/lib/a.mp4", 0, 4, 0.0164, clip_score=0.21)
    better_clip = hit("/lib/b.mp4", 0, 4, 0.0161, clip_score=0.30)
    choice = choose_clips([need("s1")], {"s1": [fused_first, better_clip]})
    assert choice["s1"].hit["path"] == "/lib/b.mp4" and choice["s1"].reasons[0] == "match 0.300 for the query"


def test_web_clips_rank_by_their_place_in_the_search():
    web = hit("https://example.org/v.mp4", 0, 0, 0.033, width=0, height=0, remote=True)
    a, b = hit("/lib/a.mp4", 0, 4, 0.016, clip_score=0.30), hit("/lib/b.mp4", 0, 4, 0.015, clip_score=0.25)
    # Ranked first by its caption: it scores a step above the best CLIP match below it; its length is unknown yet.
    first = choose_clips([need("s1")], {"s1": [web, a, b]})["s1"]
    assert first.hit["path"] == web["path"] and first.fit == pytest.approx(0.33)
    assert "ranked by its caption" in first.reasons[0] and "length unknown until downloaded" in first.reasons
    # Ranked last it stays below every CLIP match above it.
    last = choose_clips([need("s1")], {"s1": [a, b, web]})["s1"]
    assert last.hit["path"] == "/lib/a.mp4" and last.rejected[-1]["why"] == "lower fit than the chosen clip"
    # A caption span that is known to be too short is refused like any clip.
    short = dict(web, end=1.0)
    assert choose_clips([need("s1")], {"s1": [short, a]})["s1"].rejected[0]["why"].startswith("too short: 1.00 s")


def test_chosen_web_clips_are_downloaded_once_or_give_way_to_the_next_candidate(tmp_path):
    from aas_core.story.choose import _choose_fetching

    web = tmp_path / "web"
    write_clip(web / "square.mp4", moving_square_frames("yellow", "up", frames=24), fps=8)  # 3 s, 96x64
    lib, dead = tmp_path / "lib", f"http://127.0.0.1:{closed_port()}"
    with serve_folder(web) as (base, requests):
        ok = hit(f"{base}/square.mp4", 0, 2, 0.033, width=0, height=0, remote=True)
        whole = hit(f"{base}/square.mp4", 0, 0, 0.033, width=0, height=0, remote=True)
        gone, gone_too = (hit(f"{dead}/{n}.mp4", 0, 0, 0.033, width=0, height=0, remote=True) for n in ("gone", "lost"))
        a, b, c = (hit(f"/lib/{n}.mp4", 0, 8, 0.016, clip_score=0.3, width=96, height=64) for n in "abc")
        needs = [need("s1", 2.0, 1.5), need("s2", 2.0, 1.5), need("s3", 2.0, 1.5), need("s4", 5.0, 1.5)]
        candidates = {"s1": [ok, a], "s2": [gone, b], "s3": [gone_too], "s4": [whole, c]}
        for _ in range(2):
            choices, failed = _choose_fetching(needs, candidates, [], str(lib))
            assert requests["/square.mp4"] == 1  # downloaded once, the second round reads the cache
        # s1: the web clip, downloaded into the library's cache and used like a library clip.
        s1 = choices["s1"]
        assert Path(s1.hit["path"]).parent == lib / "remote-cache" and s1.hit["url"] == ok["path"] and not s1.hit["remote"]
        assert (s1.hit["start"], s1.hit["end"], s1.hit["width"]) == (0, 2, 96) and any("downloaded from" in r for r in s1.reasons)
        # s2: offline web clip -> the next (local) candidate, and the reasons say so.
        s2 = choices["s2"]
        assert s2.hit["path"] == "/lib/b.mp4" and any("gone.mp4 chosen first could not be downloaded" in r for r in s2.reasons)
        assert s2.rejected[0]["path"] == gone["path"] and s2.rejected[0]["why"].startswith("gone.mp4 is a remote clip (http://")
        assert "could not be downloaded" in s2.rejected[0]["why"] and len(failed) == 2
        # s3: nothing else to take -> keeps the URL, so the run can try once more and fail that shot with the reason.
        s3 = choices["s3"]
        assert s3.hit["path"] == gone_too["path"] and s3.hit["remote"] and "could not be downloaded" in s3.reasons[0]
        assert "fails unless the download works" in s3.reasons[0]
        # s4: the whole web clip turned out 3 s long once downloaded: too short for 5 s, the local clip is taken.
        s4 = choices["s4"]
        assert s4.hit["path"] == "/lib/c.mp4" and s4.rejected[0]["why"].startswith("too short: 3.00 s")


def test_no_candidates_gives_no_hit():
    assert choose_clips([need("s1")], {"s1": []})["s1"].hit is None


@pytest.fixture(scope="module")
def library(tiny_root, tmp_path_factory):
    """Three 3 s clips of squares indexed with tiny CLIP; returns (library folder, clips folder, weights, runtime)."""
    from aas_core.device import pick_runtime
    from aas_core.library import index_folder

    ensure_tiny(tiny_root, *MODELS)
    folder = tmp_path_factory.mktemp("choose")
    for colour, direction in (("red", "right"), ("green", "down"), ("blue", "left")):
        write_clip(folder / "clips" / f"{colour}.mp4", moving_square_frames(colour, direction, frames=24), fps=8)
    runtime = pick_runtime("cpu")
    index_folder(folder / "clips", library=folder / "lib", weights_root=tiny_root, runtime=runtime)
    return folder / "lib", folder / "clips", tiny_root, runtime


def test_a_story_over_a_real_library_gets_three_different_clips(library, tmp_path):
    from aas_core.story.choose import AutoShot, choose_story_clips

    lib, _, root, runtime = library
    shots = [AutoShot(need(f"s{i}"), "a square moving across the frame") for i in range(3)]
    shots.append(AutoShot(need("long", seconds=10.0), "a square moving across the frame"))
    args = ([], str(lib), tmp_path / "run", 0.0, str(root), runtime)
    chosen, problems = choose_story_clips(shots, *args)
    assert problems == {}
    # One query, three shots: three different source files, none reused.
    assert len({chosen[f"s{i}"]["path"] for i in range(3)}) == 3
    assert not any(chosen[f"s{i}"]["choice"]["reused"] for i in range(3))
    assert chosen["s0"]["query"] == "a square moving across the frame"
    # No 10 s clip exists: the best match is taken anyway, and the reason says so.
    assert "no candidate fits" in chosen["long"]["choice"]["reasons"][0]
    # The search ran once (one query) and is cached in the run folder.
    assert len(list((tmp_path / "run" / "cache" / "retrieval").iterdir())) == 1
    again, _ = choose_story_clips(shots, *args)
    assert again == chosen


def test_plan_story_chooses_for_all_shots_and_leaves_pinned_footage_alone(library, tmp_path):
    from aas_core.story import parse_story, plan_story

    lib, clips, root, runtime = library
    story = parse_story(f"""
defaults: {{generate: {{width: 64, height: 64, frames: 8, fps: 8, steps: 1}}}}
shots:
  - {{id: pinned, prompt: a red square, clip: {{path: {clips / 'red.mp4'}, start: 0.0}}}}
  - {{id: one, query: a square moving across the frame, prompt: a square}}
  - {{id: two, query: a square moving across the frame, prompt: a square}}
""")
    plan = plan_story(story, tmp_path / "run", tmp_path, root, lib, runtime)
    auto = {p.id: p for p in plan.shots if p.retrieval is not None}
    assert set(auto) == {"one", "two"}
    paths = {p.clip.path for p in auto.values()}
    assert len(paths) == 2 and str(clips / "red.mp4") not in paths
    for shot in auto.values():
        choice = shot.retrieval["choice"]
        assert choice["reasons"][0].startswith("match ") and not choice["reused"]
        assert any(r["why"] == "footage pinned by pinned" for r in choice["rejected"])
