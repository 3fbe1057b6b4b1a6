"""Speed presets: the fast preset (AnimateDiff-Lightning) runs without CFG on its own scheduler, with everything else."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aas_core import models
from aas_core.cli import main
from aas_core.device import Runtime
from aas_core.errors import InputError
from aas_core.generate import (
    PRESETS,
    ShotSpec,
    default_preset,
    estimate_gpu_seconds,
    generate,
    pipelines,
)
from aas_core.generate.presets import PRESET_TABLE, SPACE_ENV, denoiser_passes
from tests.helpers import ensure_tiny
from tests.test_concepts import make_photo
from tests.test_generate import bar_depth
from tests.test_ip_adapter import fresh_pipelines

CPU = Runtime(device="cpu", dtype_name="float32")
MODELS = ("sd15", "animatediff-motion-adapter-v1-5-3", "animatediff-lightning", "controlnet-depth-sd15", "ip-adapter-sd15")


@pytest.fixture(scope="module")
def root(tiny_root, tmp_path_factory):
    yield from fresh_pipelines(tiny_root, tmp_path_factory.mktemp("preset_weights"), MODELS)


def _shot(root, tmp_path, **fields):
    values = dict(prompt="a fox in the snow", frames=4, width=64, height=64, seed=2)
    values.update(fields)
    concepts, depth = values.pop("concepts", ()), values.pop("depth", None) or bar_depth()
    return generate(ShotSpec(**values), depth, concepts=list(concepts), weights_root=root, runtime=CPU, out_dir=tmp_path)


class _Calls:
    """Counts denoiser calls and the batch each one carries (2 = a CFG step's negative and positive halves)."""

    def __init__(self, module) -> None:
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.batches.append(int(sample.shape[0]))

    def __enter__(self) -> "_Calls":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_table_defaults_and_the_space_default(monkeypatch):
    assert PRESETS == ("standard", "fast")
    assert (PRESET_TABLE["standard"].steps, PRESET_TABLE["standard"].guidance) == (25, 7.5)
    assert (PRESET_TABLE["fast"].steps, PRESET_TABLE["fast"].guidance) == (4, 1.0)
    monkeypatch.delenv(SPACE_ENV, raising=False)
    assert default_preset() == "standard" and ShotSpec(prompt="x").preset == "standard"
    monkeypatch.setenv(SPACE_ENV, "someone/animate-a-story")
    spec = ShotSpec(prompt="x")
    assert default_preset() == "fast" and (spec.preset, spec.steps, spec.guidance) == ("fast", 4, 1.0)
    # VACE has no fast model: its shots stay standard even on a Space.
    assert ShotSpec(prompt="x", backend="vace").preset == "standard"
    assert denoiser_passes(spec) == 4 and denoiser_passes(ShotSpec(prompt="x", preset="standard")) == 50


def test_fast_preset_runs_cfg_off_on_the_lightning_scheduler(root, tmp_path):
    first = _shot(root, tmp_path, preset="fast")
    pipe = pipelines.current().pipe
    with _Calls(pipe.unet) as unet, _Calls(pipe.controlnet) as controlnet:
        fast = _shot(root, tmp_path, preset="fast")
    assert np.array_equal(first.frames, fast.frames)
    # One pass per step and no negative half: the motion UNet sees 1 video, the ControlNet its 4 frames.
    assert unet.batches == [1] * 4 and controlnet.batches == [4] * 4
    scheduler = pipe.scheduler
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.config.beta_schedule == "linear"
    assert scheduler.timesteps.round().int().tolist() == [999, 749, 499, 249]
    record = json.loads((fast.folder / "params.json").read_text())["preset"]
    assert record["name"] == "fast" and record["cfg"] is False and record["guidance"] == 1.0 and record["steps"] == 4
    assert record["motion_file"] == "animatediff_lightning_4step_diffusers.safetensors" and record["denoiser_passes"] == 4
    assert fast.params["models"]["animatediff-lightning"]["path"].endswith("animatediff_lightning_4step_diffusers.safetensors")
    assert "animatediff-motion-adapter-v1-5-3" not in fast.params["models"]


def test_standard_guides_with_two_passes_per_step_and_replaces_the_fast_pipeline(root, tmp_path):
    _shot(root, tmp_path, preset="fast")
    fast_key = pipelines.current().key
    _shot(root, tmp_path, preset="standard", steps=2)
    pipe = pipelines.current().pipe
    with _Calls(pipe.unet) as unet, _Calls(pipe.controlnet) as controlnet:
        standard = _shot(root, tmp_path, preset="standard", steps=2)
    assert unet.batches == [2, 2] and controlnet.batches == [8, 8] and standard.params["preset"]["cfg"] is True
    assert standard.params["preset"]["scheduler"] == "DDIMScheduler"
    assert pipelines.current().key != fast_key
    assert sum(1 for k in models.loaded() if k.variant.startswith(pipelines.PIPELINE_VARIANT)) == 1


def test_other_distilled_step_counts_load_their_own_checkpoint(root, tmp_path):
    two = _shot(root, tmp_path, preset="fast", steps=2)
    assert two.params["preset"]["motion_file"] == "animatediff_lightning_2step_diffusers.safetensors"
    assert two.params["preset"]["denoiser_passes"] == 2


def test_fast_works_with_depth_freenoise_and_every_concept_kind(root, tmp_path):
    import torch

    from aas_core.concepts import Concept
    from aas_core.concepts.ip_adapter import make_ip_concept
    from aas_core.concepts.store import write_concept

    photos = [make_photo(tmp_path / f"p{i}.png", size=(160, 140), seed=i) for i in range(2)]
    ivy = make_ip_concept("ivy", "woman", photos, ip_scale=1.0, root=root, runtime=CPU)
    table = torch.randn(4, 2, 32, generator=torch.Generator().manual_seed(0)) * 3
    tom = write_concept(Concept(name="tom", class_word="man", buckets=4, vectors=2, dim=32, base_model="sd15", tiny=True),
                        table, root, overwrite=True)
    long = dict(preset="fast", frames=10, context_length=8, context_stride=2, depth=bar_depth(frames=10))
    plain = _shot(root, tmp_path, prompt="woman and man", **long)
    both = _shot(root, tmp_path, prompt="<ivy> and <tom>", concepts=[ivy, tom], **long)
    assert both.params["free_noise"] and plain.params["free_noise"]
    assert both.params["ip_adapter"][0]["concept"] == "ivy" and both.params["concepts"] == ["ivy", "tom"]
    # Without CFG's amplification a tiny random UNet moves less, but the concepts do reach it.
    assert np.abs(plain.frames.astype(int) - both.frames).mean() > 0.1
    # The depth ControlNet steers the fast shot as it does the standard one.
    loose = _shot(root, tmp_path, prompt="woman and man", strength=0.0, **long)
    assert np.abs(plain.frames.astype(int) - loose.frames).mean() > 0.5


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"preset": "fast", "steps": 6}, "distilled for 1, 2, 4, 8 steps"),
        ({"preset": "fast", "scheduler": "ddim"}, "leave scheduler at default"),
        ({"preset": "fast", "backend": "vace", "frames": 17}, "for the animatediff backend"),
        ({"preset": "turbo"}, "unknown preset"),
    ],
)
def test_settings_a_preset_cannot_run_are_refused(fields, message):
    with pytest.raises(InputError, match=message):
        ShotSpec(prompt="x", **fields)


def test_gpu_budget_follows_the_job():
    fast, standard = ShotSpec(prompt="x", preset="fast"), ShotSpec(prompt="x", preset="standard")
    assert estimate_gpu_seconds(fast) < estimate_gpu_seconds(standard)
    assert estimate_gpu_seconds(ShotSpec(prompt="x", preset="standard", frames=64)) > estimate_gpu_seconds(standard)
    assert estimate_gpu_seconds(ShotSpec(prompt="x", preset="fast", width=256, height=256, frames=8)) >= 30
    assert estimate_gpu_seconds(ShotSpec(prompt="x", backend="vace", frames=81, width=1280, height=720)) == 600


def test_story_defaults_and_shots_choose_the_preset():
    from aas_core.story.runner import _merged_generate
    from aas_core.story.schema import parse_story

    story = parse_story(
        "defaults:\n  generate: {preset: fast}\nshots:\n  - {id: fox, prompt: a fox}\n  - id: cat\n    prompt: a cat\n"
        "    generate: {preset: standard, ip_scale: 0.4}\n"
    )
    first, second = (ShotSpec(prompt=shot.prompt, **_merged_generate(story, shot)) for shot in story.shots)
    assert (first.preset, first.steps) == ("fast", 4)
    assert (second.preset, second.steps, second.ip_scale) == ("standard", 25, 0.4)


def test_cli_preset_flag(root, tmp_path, capsys):
    depth = tmp_path / "depth"
    bar_depth().save(depth)
    code = main(["generate", "--prompt", "a fox", "--depth", str(depth), "--preset", "fast", "--frames", "4",
                 "--size", "64x64", "--weights", str(root), "--out", str(tmp_path / "shots"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    params = json.loads((tmp_path / "shots" / out["folder"].split("/")[-1] / "params.json").read_text())
    assert params["preset"]["name"] == "fast" and params["spec"]["steps"] == 4


def test_tiny_lightning_files_are_bare_state_dicts_in_the_hub_layout(root):
    from safetensors import safe_open

    from aas_core.registry import get_spec
    from aas_core.weights import model_dir

    ensure_tiny(root, "animatediff-lightning")
    folder = model_dir("animatediff-lightning", root)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == sorted(get_spec("animatediff-lightning").files)
    assert not (folder / "config.json").exists()
    with safe_open(str(folder / "animatediff_lightning_4step_diffusers.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("mid_block.motion_modules.") for k in keys)  # the v2 architecture, with a motion mid block
