"""bench/gpu_check.py runs end to end on the CPU with tiny models and prints one JSON object."""

from __future__ import annotations

import json

from bench.gpu_check import SECTIONS, main


def test_gpu_check_runs_on_cpu_with_tiny_models(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    report = json.loads(printed[-1])
    assert report == json.loads(out.read_text())
    assert report["env"]["tiny"] is True and report["env"]["device"] == "cpu"
    failed = {name: report[name].get("error") for name in SECTIONS if "error" in report[name]}
    assert not failed, failed
    shots = {k: v for k, v in report["animatediff"].items() if k != "section_s"}
    assert set(shots) == {"full", "vae_tiling"}  # no offloading without a GPU
    for shot in shots.values():
        assert shot["memory_mode"] in ("full", "vae_tiling") and shot["s_per_step"] > 0 and shot["shot_s"] > 0
    assert report["fast_preset"]["steps"] == 1 and report["vace"]["frames"] == 5
    assert report["timeinv"]["loss_finite"] and report["timeinv"]["s_per_step"] > 0
    assert report["depth"]["batch_2"]["frames_per_s"] > 0 and report["clip"]["batch_4"]["images_per_s"] > 0
    assert "needs CUDA" in report["oom_retry"]["skipped"]


def test_gpu_check_skips_sections_past_its_budget(capsys):
    assert main(["--device", "cpu", "--tiny", "--budget-s", "0", "--sections", "depth,clip"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "time budget" in report["depth"]["skipped"] and "time budget" in report["clip"]["skipped"]
