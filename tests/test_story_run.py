"""Running stories end to end with tiny models: resume after a kill, one edit = one shot, failures, checks first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aas_core.errors import InputError
from aas_core.stitch import StitchShot, timeline
from aas_core.story import execute_plan, load_story, plan_story, run_story
from aas_core.video_io import probe
from tests.helpers import SHARED_CLIPS, closed_port, ensure_tiny, moving_square_frames, serve_folder, write_clip

MODELS = ("clip-vit-b-32", "depth-anything-v2-small", "sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15")
CONCEPT = "story-hero"
BIKES = SHARED_CLIPS / "bikes.mp4"

STORY = """
title: Three Squares
characters: [{{name: hero, concept: {concept}}}]
defaults:
  generate: {{width: 64, height: 64, frames: 8, fps: 8, steps: 1, guidance: 0}}
  transition: crossfade
  transition_duration: 0.5
output: {{title_duration: 1.0}}
shots:
  - {{id: red, query: a red square moving right, prompt: "<hero> crossing a field", caption: The hero sets out}}
  - id: green
    prompt: a green square falling
    clip: {{path: clips/green.mp4, start: 0.5, end: 2.5}}
    caption: Down it goes
    transition: fade_black
  - {{id: last, prompt: bikes in a street, clip: {last}, caption: The end}}
"""


@pytest.fixture(scope="module")
def env(tiny_root, tmp_path_factory):
    """Tiny weights, three clips, an indexed library and a tiny concept; returns (root, folder, runtime)."""
    import torch
    from PIL import Image

    from aas_core.concepts.store import Concept, write_concept
    from aas_core.device import pick_runtime
    from aas_core.library import index_folder

    ensure_tiny(tiny_root, *MODELS)
    # Our own weights folder (models linked in) so the test concept does not show up in other tests' listings.
    root = tmp_path_factory.mktemp("story_weights")
    for name in MODELS:
        (root / name).symlink_to(tiny_root / name, target_is_directory=True)
    folder = tmp_path_factory.mktemp("story")
    clips = folder / "clips"
    clips.mkdir()
    for colour, direction in (("red", "right"), ("green", "down"), ("blue", "left")):
        write_clip(clips / f"{colour}.mp4", moving_square_frames(colour, direction, frames=24), fps=8)
    runtime = pick_runtime("cpu")
    index_folder(clips, library=folder / "lib", weights_root=root, runtime=runtime)
    dim = json.loads((root / "sd15" / "text_encoder" / "config.json").read_text())["hidden_size"]
    photo = Image.fromarray(moving_square_frames("red", frames=1, size=(64, 64))[0])
    torch.manual_seed(0)
    concept = Concept(name=CONCEPT, class_word="square", buckets=4, vectors=1, dim=dim, base_model="sd15", tiny=True)
    write_concept(concept, torch.randn(4, 1, dim), root=root, overwrite=True, photos=[photo])
    return root, folder, runtime


def write_story(folder: Path, name: str = "story.yaml", **edits: str) -> Path:
    last = f"{{path: {BIKES}, start: 0.0, end: 1.2}}" if BIKES.is_file() else "clips/blue.mp4"
    text = STORY.format(concept=CONCEPT, last=last)
    for old, new in edits.items():
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


def statuses(run) -> list[str]:
    return [s.status for s in run.shots]


def run(env, story: Path, out: Path, **kwargs):
    root, folder, runtime = env
    return run_story(story, out_dir=out, weights_root=root, library=folder / "lib", runtime=runtime, **kwargs)


def test_three_shot_story_end_to_end_resumes_after_a_kill(env):
    _, folder, _ = env
    story, out = write_story(folder), folder / "run"

    def kill_during_second_shot(fraction: float, message: str) -> None:
        if message.startswith("[green") and "step" in message:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill) does in the middle of the denoising

    with pytest.raises(KeyboardInterrupt):
        run(env, story, out, on_progress=kill_during_second_shot)
    red_done = next((out / "shots" / "red").glob("*/done.json"))
    stamp = red_done.stat().st_mtime_ns
    assert not list((out / "shots" / "green").glob("*/done.json"))
    assert [s["status"] for s in json.loads((out / "run.json").read_text())["shots"]] == ["generated", "skipped", "skipped"]

    messages: list[str] = []
    result = run(env, story, out, on_progress=lambda f, m: messages.append(m))
    assert statuses(result) == ["cached", "generated", "generated"]
    assert red_done.stat().st_mtime_ns == stamp and len(list((out / "shots" / "red").glob("*/*/shot.mp4"))) == 1
    assert not any(m.startswith("[red") and "step" in m for m in messages), "the finished shot was not redone"

    # The stitched video: title + three 1 s shots - one 0.5 s crossfade (fading through black overlaps nothing).
    shots = [StitchShot(s.video, s.caption, s.transition, s.transition_duration) for s in result.shots]
    assert timeline(shots, [1.0, 1.0, 1.0], title_duration=1.0)[1] == pytest.approx(3.5)
    info = probe(result.video)
    assert result.duration == pytest.approx(3.5) and info.duration == pytest.approx(3.5, abs=0.01)
    assert (info.codec, info.pix_fmt, info.width, info.height, info.frame_count) == ("h264", "yuv420p", 64, 64, 28)
    # The run folder holds the resolved story, params.json per shot, comparisons, storyboard and reports.
    resolved = load_story(out / "story.yaml")
    # A tiny CLIP ranks at random: check that a library clip was chosen and recorded, not which.
    assert Path(resolved.shots[0].clip.path).parent == folder / "clips" and resolved.shots[0].clip.end > 0
    assert all(isinstance(s.seed, int) for s in resolved.shots)
    for shot in result.shots:
        params = json.loads((Path(shot.folder) / "params.json").read_text())
        assert params["tiny"] and params["spec"]["frames"] == 8
        assert probe(shot.comparison).width == 3 * 64
    assert json.loads((Path(result.shots[0].folder) / "params.json").read_text())["concepts"] == [CONCEPT]
    assert Path(result.storyboard).is_file()
    report = json.loads(Path(result.report_json).read_text())
    assert report["counts"] == {"generated": 2, "cached": 1, "failed": 0, "skipped": 0} and report["preview"]
    for shot in report["shots"]:
        for name in ("clip_text_similarity", "frame_consistency", "depth_adherence"):
            assert -1.0 <= shot["metrics"][name] <= 1.0
    assert report["shots"][0]["metrics"]["character_identity"] is not None
    assert report["shots"][1]["metrics"]["character_identity"] is None
    assert "| red | cached |" in Path(result.report_md).read_text()
    assert "<video" in Path(result.report_html).read_text()

    again = run(env, story, out)
    assert statuses(again) == ["cached", "cached", "cached"]

    # Killed after generation wrote its folder but before the shot was marked done: the result is adopted.
    green_done = next((out / "shots" / "green").glob("*/done.json"))
    green_done.unlink()
    messages.clear()
    adopted = run(env, story, out, on_progress=lambda f, m: messages.append(m))
    assert statuses(adopted) == ["cached", "generated", "cached"] and green_done.is_file()
    assert not any(m.startswith("[green") and "step" in m for m in messages)
    assert len(list((out / "shots" / "green").glob("*/*/shot.mp4"))) == 1

    edited = write_story(folder, **{"a green square falling": "a green square falling slowly"})
    third = run(env, edited, out)
    assert statuses(third) == ["cached", "generated", "cached"]
    assert len(list((out / "shots" / "green").glob("*/done.json"))) == 2
    assert red_done.stat().st_mtime_ns == stamp


def test_sigkill_loses_nothing_finished(env, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root, folder, _ = env
    story, out = write_story(folder, "killed.yaml"), tmp_path / "out"
    command = [sys.executable, "-m", "aas_core", "story", "run", str(story), "--out", str(out), "--weights", str(root),
               "--library", str(folder / "lib"), "--device", "cpu", "--no-metrics", "--json"]
    env_vars = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env_vars, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while not list((out / "shots" / "red").glob("*/done.json")):
            assert process.poll() is None and time.monotonic() < deadline, "the first shot never finished"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    red_done = next((out / "shots" / "red").glob("*/done.json"))
    stamp = red_done.stat().st_mtime_ns
    result = run(env, story, out, metrics=False)
    assert result.shots[0].status == "cached" and red_done.stat().st_mtime_ns == stamp
    assert all(s.status in ("cached", "generated") for s in result.shots)
    assert probe(result.video).duration == pytest.approx(3.5, abs=0.01)


def test_a_failing_shot_does_not_stop_the_others(env, tmp_path):
    root, folder, runtime = env
    shutil.copy(folder / "clips" / "blue.mp4", tmp_path / "doomed.mp4")
    story = load_story(write_story(folder, "two.yaml", **{"clips/green.mp4": str(tmp_path / "doomed.mp4")}))
    story.shots = story.shots[1:]
    plan = plan_story(story, tmp_path / "out", folder, root, folder / "lib", runtime)
    (tmp_path / "doomed.mp4").unlink()  # the clip vanishes after the checks
    result = execute_plan(plan, metrics=False, runtime=runtime)
    assert statuses(result) == ["failed", "generated"]
    assert "doomed.mp4" in result.shots[0].error and (tmp_path / "out" / "shots" / "green" / "error.log").is_file()
    assert probe(result.video).duration == pytest.approx(1.0 + 1.0, abs=0.01)  # title + the surviving shot
    assert "green: " in Path(result.report_md).read_text()


WEB_STORY = """
title: Web clips
defaults:
  generate: {width: 64, height: 64, frames: 8, fps: 8, steps: 1, guidance: 0}
shots:
SHOTS
"""


def test_remote_auto_clips_are_fetched_once_and_used_or_give_way_offline(env, tmp_path):
    from aas_core.library import import_captions, index_folder

    root, folder, runtime = env
    lib, web = tmp_path / "lib", tmp_path / "web"
    index_folder(folder / "clips", library=lib, weights_root=root, runtime=runtime)  # our own: captions are added to it
    write_clip(web / "giraffe.mp4", moving_square_frames("yellow", "up", frames=24), fps=8)
    dead = f"http://127.0.0.1:{closed_port()}"
    with serve_folder(web) as (base, requests):
        (tmp_path / "captions.csv").write_text(f"url,caption\n{base}/giraffe.mp4,a giraffe eats leaves\n"
                                               f"{dead}/zebra.mp4,a zebra crosses the road\n")
        import_captions(tmp_path / "captions.csv", lib)
        story = tmp_path / "web.yaml"
        story.write_text(WEB_STORY.replace("SHOTS", "  - {id: giraffe, query: giraffe leaves, prompt: a giraffe}\n"
                                                     "  - {id: zebra, query: zebra road, prompt: a zebra}"))
        for attempt in ("generated", "cached"):
            result = run_story(story, out_dir=tmp_path / "out", weights_root=root, library=lib, runtime=runtime, metrics=False)
            assert statuses(result) == [attempt, attempt]
            assert requests["/giraffe.mp4"] == 1  # fetched once; the second run reads the library's cache
        giraffe, zebra = result.shots
        # The web clip was downloaded into the library's remote cache and made the shot like a library clip.
        assert Path(giraffe.clip["path"]).parent == lib / "remote-cache" and giraffe.clip["retrieved"]
        assert any(f"downloaded from {base}/giraffe.mp4" in r for r in giraffe.clip["choice"]["reasons"])
        used = load_story(tmp_path / "out" / "story.yaml").shots[0].clip
        assert used.path == giraffe.clip["path"] and used.end == pytest.approx(3.0, abs=0.15)  # no span in the row: all of it
        # The offline one gave way to the next local candidate, and its reasons say which and why.
        assert Path(zebra.clip["path"]).parent == folder / "clips"
        assert any("zebra.mp4 chosen first could not be downloaded" in r for r in zebra.clip["choice"]["reasons"])
        assert any("zebra.mp4 is a remote clip" in r["why"] and "refused" in r["why"] for r in zebra.clip["choice"]["rejected"])
    # A captions-only library offers nothing but the offline clip: that shot fails with the reason, the other one runs.
    only = tmp_path / "captions-only"
    import_captions(tmp_path / "captions.csv", only)
    story.write_text(WEB_STORY.replace("SHOTS", f"  - {{id: zebra, query: zebra road, prompt: a zebra}}\n"
                                                f"  - {{id: pinned, prompt: a red square, clip: {folder / 'clips' / 'red.mp4'}}}"))
    result = run_story(story, out_dir=tmp_path / "out2", weights_root=root, library=only, runtime=runtime, metrics=False)
    assert statuses(result) == ["failed", "generated"]
    zebra = result.shots[0]
    assert zebra.clip["path"] == f"{dead}/zebra.mp4" and "no other candidate was left" in zebra.clip["choice"]["reasons"][0]
    assert zebra.error.startswith(f"InputError: zebra.mp4 is a remote clip ({dead}/zebra.mp4) and could not be downloaded: ")
    assert "connect to the internet" in zebra.error and (tmp_path / "out2" / "shots" / "zebra" / "error.log").is_file()



def test_a_pinned_web_clip_is_fetched_once_into_the_cache_and_an_offline_one_fails_alone(env, tmp_path):
    root, folder, runtime = env
    lib, web = tmp_path / "lib", tmp_path / "web"
    write_clip(web / "giraffe.mp4", moving_square_frames("yellow", "up", frames=24), fps=8)
    dead = f"http://127.0.0.1:{closed_port()}"
    story = tmp_path / "pinned.yaml"
    with serve_folder(web) as (base, requests):
        story.write_text(WEB_STORY.replace("SHOTS", f"  - {{id: giraffe, prompt: a giraffe, clip: {base}/giraffe.mp4}}\n"
                                                     f"  - {{id: zebra, prompt: a zebra, clip: {dead}/zebra.mp4}}"))
        for attempt in ("generated", "cached"):
            result = run_story(story, out_dir=tmp_path / "out", weights_root=root, library=lib, runtime=runtime, metrics=False)
            assert statuses(result) == [attempt, "failed"]
            assert requests["/giraffe.mp4"] == 1  # the second run reads the library's remote cache
    cached = list((lib / "remote-cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".mp4"
    giraffe, zebra = result.shots
    assert Path(giraffe.video).is_file()
    assert "zebra.mp4 is a remote clip" in zebra.error and "could not be downloaded" in zebra.error


def test_every_problem_is_reported_before_any_model_runs(env, tmp_path):
    root, folder, runtime = env
    story = tmp_path / "bad.yaml"
    story.write_text(
        f"""
characters: [{{name: ghost}}]
defaults: {{min_clip_duration: 100}}
shots:
  - {{id: a, prompt: "<ghost> walks", clip: {folder / 'clips' / 'red.mp4'}}}
  - {{id: b, prompt: x, clip: missing.mp4}}
  - {{id: c, prompt: y, generate: {{width: 100}}, clip: {folder / 'clips' / 'red.mp4'}}}
  - {{id: e, prompt: w, generate: {{options: {{colour: red}}}}, clip: {folder / 'clips' / 'red.mp4'}}}
"""
    )
    with pytest.raises(InputError) as err:
        run(env, story, tmp_path / "out")
    message = str(err.value)
    assert "character ghost: no concept named 'ghost'" in message
    assert "shot 2 (b)" in message and "missing.mp4 does not exist" in message
    assert "shot 3 (c): width 100 is not a multiple of 8" in message
    assert "shot 4 (e): generate.options" in message and "colour" in message
    assert not (tmp_path / "out" / "shots").exists()

    # Unknown depth options are refused when the file is read, with their line.
    blurred = tmp_path / "blur.yaml"
    blurred.write_text("shots:\n  - {id: d, prompt: z, depth: {options: {blur: 3}}, clip: red.mp4}\n")
    with pytest.raises(InputError, match=r"line 2: shots\[0\]\.depth\.options\.blur: unknown field"):
        run(env, blurred, tmp_path / "out")
    assert not (tmp_path / "out" / "shots").exists()

    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("defaults: {min_clip_duration: 100}\nshots: [{id: a, prompt: x, query: a red square}]\n")
    with pytest.raises(InputError, match=r"shot 1 \(a\): retrieval found no clip for 'a red square'"):
        run(env, nothing, tmp_path / "out")
    assert not (tmp_path / "out" / "shots").exists()


def test_cli_new_check_run_stitch_report(env, tmp_path, capsys):
    from aas_core.cli import main

    root, folder, _ = env
    draft = tmp_path / "draft.yaml"
    assert main(["story", "new", "A red square moves. It stops.", "--out", str(draft), "--title", "Draft", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["ok"] and [s["id"] for s in made["shots"]] == ["shot-01", "shot-02"]
    assert main(["story", "new", "again", "--out", str(draft)]) == 2
    assert "already exists" in capsys.readouterr().err

    story, out = write_story(folder), folder / "run"
    common = ["--weights", str(root), "--library", str(folder / "lib"), "--device", "cpu"]
    assert main(["story", "check", str(story), "--out", str(out), *common, "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in checked["shots"]] == ["red", "green", "last"]
    assert main(["story", "run", str(story), "--out", str(out), "--only", "red,green", *common, "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in ran["shots"]][:2] in (["cached", "cached"], ["generated", "generated"])
    assert main(["story", "stitch", str(out), "--json"]) == 0
    stitched = json.loads(capsys.readouterr().out)
    assert Path(stitched["video"]).is_file() and stitched["duration"] > 0
    assert main(["story", "report", str(out)]) == 0
    assert "| red |" in capsys.readouterr().out
    assert main(["story", "stitch", str(tmp_path), "--json"]) == 2
    assert "not a story run folder" in json.loads(capsys.readouterr().out.splitlines()[0])["error"]


@pytest.fixture(scope="module")
def shot_env(tiny_root, tmp_path_factory):
    """Tiny weights and one clip, without a library (run_shot needs none)."""
    from aas_core.device import pick_runtime

    ensure_tiny(tiny_root, *MODELS)
    folder = tmp_path_factory.mktemp("one_shot")
    clip = write_clip(folder / "red.mp4", moving_square_frames("red", "right", frames=24), fps=8)
    return tiny_root, clip, pick_runtime("cpu")


def test_run_shot_makes_depth_generation_comparison_metrics_then_reuses_them(shot_env, tmp_path):
    from aas_core.generate import ShotSpec
    from aas_core.story import ClipRef, ShotRequest, run_shot

    root, clip, runtime = shot_env
    request = ShotRequest(spec=ShotSpec(prompt="a red square", width=64, height=64, frames=8, fps=8, steps=1, seed=1),
                          clip=ClipRef(path=str(clip), start=0.5, end=2.5), depth_options={"smoothing": 0.0})
    messages: list[str] = []
    made = run_shot(request, tmp_path / "shot", weights_root=root, runtime=runtime, depth_cache=tmp_path / "depth",
                    on_progress=lambda f, m: messages.append(m))
    assert not made.cached and made.frames == 8 and made.fps == 8.0 and made.tiny
    assert Path(made.video).is_file() and Path(made.comparison).is_file() and (tmp_path / "shot" / "done.json").is_file()
    assert made.load_frames().shape == (8, 64, 64, 3)
    assert set(made.metrics) >= {"clip_text_similarity", "frame_consistency", "depth_adherence"}
    assert -1 <= made.metrics["depth_adherence"] <= 1 and made.metrics["character_identity"] is None
    assert messages[0] == "depth" and any("step" in m for m in messages) and messages[-1] == "done"
    assert any(p.is_dir() for p in (tmp_path / "depth").iterdir())  # the depth went to the given cache

    again = run_shot(request, tmp_path / "shot", weights_root=root, runtime=runtime, depth_cache=tmp_path / "depth")
    assert again.cached and again.video == made.video and again.metrics == made.metrics
    assert json.loads((tmp_path / "shot" / "done.json").read_text()) == made.record()


def test_run_shot_keeps_a_generation_a_kill_left_unmarked(shot_env, tmp_path):
    from aas_core.generate import ShotSpec
    from aas_core.story import ClipRef, ShotRequest, run_shot

    root, clip, runtime = shot_env
    request = ShotRequest(spec=ShotSpec(prompt="a red square", width=64, height=64, frames=8, fps=8, steps=1, seed=2),
                          clip=ClipRef(path=str(clip)))
    first = run_shot(request, tmp_path / "shot", weights_root=root, runtime=runtime, metrics=False)
    assert first.metrics is None
    # A kill after generation but before done.json: the next call reuses the generation instead of redoing it.
    (tmp_path / "shot" / "done.json").unlink()
    messages: list[str] = []
    again = run_shot(request, tmp_path / "shot", weights_root=root, runtime=runtime, metrics=False,
                     on_progress=lambda f, m: messages.append(m))
    assert not again.cached and again.generation == first.generation
    assert not any("step" in m for m in messages)


def test_assemble_rebuilds_video_and_reports_from_run_json(env, tmp_path):
    from aas_core.story import assemble, read_run

    _, folder, _ = env
    story, out = write_story(folder, "assemble.yaml"), tmp_path / "out"
    first = run(env, story, out, metrics=False)
    (out / "story.mp4").unlink()
    again = assemble(out)
    assert Path(again.video).is_file() and again.duration == pytest.approx(first.duration)
    assert [s.id for s in again.shots] == [s["id"] for s in read_run(out)["shots"]] == ["red", "green", "last"]
    assert Path(again.report_html).is_file() and Path(again.storyboard).is_file()


def test_story_modules_have_no_import_circle():
    import ast

    package = Path(__file__).resolve().parents[1] / "aas_core" / "story"
    for name in ("report.py", "outcome.py", "shot.py", "assembly.py"):
        tree = ast.parse((package / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "aas_core.story.runner" not in imported, f"{name} imports the runner"
