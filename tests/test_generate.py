"""Shot generation on tiny random pipelines written by `weights tiny`, loaded through the product's own code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aas_core.cli import main
from aas_core.depth import DepthVideo
from aas_core.device import Runtime
from aas_core.errors import Cancelled, InputError
from aas_core.generate import BACKENDS, MEMORY_MODES, SCHEDULERS, OutOfMemory, ShotSpec, generate
from aas_core.generate import pipelines
from aas_core.progress import CancelToken
from aas_core.video_io import probe
from aas_core.weights import model_dir
from tests.helpers import ensure_tiny, moving_square_frames, write_clip

GENERATION_MODELS = ("sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15", "wan2.1-vace-1.3b")
CPU = Runtime(device="cpu", dtype_name="float32")


@pytest.fixture(scope="module")
def weights(tiny_root):
    """Tiny generation models; the pipeline cache is emptied before and after this module."""
    ensure_tiny(tiny_root, *GENERATION_MODELS)
    pipelines.release()
    yield tiny_root
    pipelines.release()


def bar_depth(frames: int = 6, offset: int = 0, size: tuple[int, int] = (64, 48)) -> DepthVideo:
    """A near vertical bar sliding right over a far background."""
    width, height = size
    depth = np.full((frames, height, width), 0.1, np.float32)
    for i in range(frames):
        x = (offset + i * 5) % (width - 12)
        depth[i, :, x : x + 12] = 1.0
    return DepthVideo(frames=depth, fps=8.0, source="synthetic bar")


def shot(weights, tmp_path, depth=None, **overrides):
    fields = dict(prompt="a red fox in the snow", frames=4, width=64, height=64, steps=2, seed=3)
    fields.update(overrides)
    return generate(ShotSpec(**fields), depth or bar_depth(), weights_root=weights, runtime=CPU, out_dir=tmp_path)


def test_sd15_tiny_loads_per_subfolder_with_real_clip_tokenizer(weights):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = model_dir("sd15", weights)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    # The real CLIP BPE: these are the ids SD1.5's own tokenizer gives.
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    ids = tokenizer(["a dog"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = encoder(ids).last_hidden_state
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    assert hidden.shape == (1, 77, unet.config.cross_attention_dim)
    assert AutoencoderKL.from_pretrained(folder / "vae").config.latent_channels == 4
    assert DDIMScheduler.from_pretrained(folder / "scheduler").config.num_train_timesteps == 1000


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"width": 100}, "multiple of 8"),
        ({"frames": 0}, "at least 1"),
        ({"steps": -1}, "steps must be between"),
        ({"backend": "sora"}, "unknown backend"),
        ({"backend": "vace", "frames": 16}, "13 or 17"),
        ({"backend": "vace", "width": 200}, "multiple of 16"),
        ({"backend": "vace", "scheduler": "ddim"}, "does not work with VACE"),
        ({"prompt": "  "}, "prompt is empty"),
        ({"structure_start": 0.7, "structure_end": 0.5}, "must be below"),
        ({"strength": 3.0}, "strength must be between"),
        ({"reference_images": ("x.png",)}, "need the vace backend"),
        ({"frames": 2.5}, "whole number"),
        ({"context_stride": 20}, "context_stride"),
    ],
)
def test_bad_specs_say_what_to_fix(fields, message):
    with pytest.raises(InputError, match=message):
        ShotSpec(**{"prompt": "a fox", **fields})


def test_choices_and_backend_defaults():
    assert BACKENDS == ("animatediff", "vace") and MEMORY_MODES[0] == "auto" and "ddim" in SCHEDULERS
    vace = ShotSpec(prompt="a fox", backend="vace")
    assert (vace.frames, vace.guidance) == (17, 5.0)
    assert ShotSpec(prompt="a fox", frames=40).uses_free_noise


def test_same_seed_same_shot_and_outputs_on_disk(weights, tmp_path):
    progress = []
    first = generate(
        ShotSpec(prompt="a red fox", frames=4, width=64, height=64, steps=2, seed=3),
        bar_depth(),
        on_progress=lambda f, m: progress.append(f),
        weights_root=weights,
        runtime=CPU,
        out_dir=tmp_path,
    )
    again = shot(weights, tmp_path, prompt="a red fox")
    other_seed = shot(weights, tmp_path, prompt="a red fox", seed=4)
    assert first.frames.shape == (4, 64, 64, 3) and first.frames.dtype == np.uint8
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other_seed.frames)
    assert first.folder != again.folder and first.tiny
    assert progress == sorted(progress) and progress[-1] == 1.0
    params = json.loads((first.folder / "params.json").read_text())
    assert params["seed"] == 3 and params["spec"]["steps"] == 2 and params["tiny"]
    assert params["models"]["sd15"]["hub_id"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert params["depth"]["source"] == "synthetic bar" and params["depth"]["frame_indices"] == [0, 2, 3, 5]
    assert len(list((first.folder / "frames").glob("*.png"))) == 4
    info = probe(first.video_path)
    assert (info.codec, info.pix_fmt, info.width, info.frame_count) == ("h264", "yuv420p", 64, 4)


def test_structure_strength_and_depth_steer_the_shot(weights, tmp_path):
    base = shot(weights, tmp_path, strength=1.0)
    no_structure = shot(weights, tmp_path, strength=0.0)
    moved_depth = shot(weights, tmp_path, depth=bar_depth(offset=20), strength=1.0)
    late_only = shot(weights, tmp_path, strength=1.0, structure_start=0.5)
    assert np.abs(base.frames.astype(int) - no_structure.frames).mean() > 0.5
    assert np.abs(base.frames.astype(int) - moved_depth.frames).mean() > 0.5
    assert np.abs(base.frames.astype(int) - late_only.frames).mean() > 0.5
    # Without structure the depth no longer matters at all.
    no_structure_moved = shot(weights, tmp_path, depth=bar_depth(offset=20), strength=0.0)
    assert np.array_equal(no_structure.frames, no_structure_moved.frames)


def test_free_noise_windows_for_long_animatediff_shots(weights, tmp_path):
    from diffusers.models.attention import FreeNoiseTransformerBlock

    long_shot = shot(weights, tmp_path, frames=12, context_length=8, context_stride=2)
    assert long_shot.frames.shape[0] == 12 and long_shot.params["free_noise"]
    pipe = pipelines.current().pipe
    blocks = [b for block in pipe.unet.down_blocks for m in block.motion_modules for b in m.transformer_blocks]
    assert all(isinstance(b, FreeNoiseTransformerBlock) for b in blocks)
    short = shot(weights, tmp_path)
    assert not short.params["free_noise"] and not pipe.free_noise_enabled


def test_vace_with_and_without_reference_image(weights, tmp_path):
    from PIL import Image

    reference = tmp_path / "hero.png"
    Image.new("RGB", (48, 48), (200, 40, 40)).save(reference)
    fields = dict(backend="vace", frames=9, width=32, height=32, steps=2)
    plain = shot(weights, tmp_path, **fields)
    with_ref = shot(weights, tmp_path, reference_images=(str(reference),), **fields)
    assert plain.frames.shape == with_ref.frames.shape == (9, 32, 32, 3)
    assert with_ref.params["reference_images"] == 1 and plain.params["reference_images"] == 0
    assert not np.array_equal(plain.frames, with_ref.frames)
    # The VACE structure schedule (per-step control scale) changes the result too.
    late_only = shot(weights, tmp_path, structure_start=0.5, **fields)
    assert np.abs(plain.frames.astype(int) - late_only.frames).mean() > 0.5
    assert plain.params["models"]["wan2.1-vace-1.3b"]["hub_id"] == "Wan-AI/Wan2.1-VACE-1.3B-diffusers"


def test_one_pipeline_is_kept_and_switching_backend_frees_the_other(weights, tmp_path):
    shot(weights, tmp_path)
    first = pipelines.current()
    again = shot(weights, tmp_path, prompt="a fox at night")
    assert pipelines.current() is first and again.timings["load_s"] == 0.0
    shot(weights, tmp_path, backend="vace", frames=5, width=32, height=32, steps=1)
    assert pipelines.current().backend == "vace" and pipelines.current() is not first


def _oom_on_load(monkeypatch, failing_modes: set[str]) -> list[str]:
    """Wrap the real loader so the real denoiser raises a CUDA-style OOM in `failing_modes`."""
    import torch

    real_load = pipelines.load_pipeline
    seen: list[str] = []

    def load(backend, weights_root, runtime, memory_mode, motion=None):
        loaded = real_load(backend, weights_root, runtime, memory_mode, motion)
        seen.append(memory_mode)
        if memory_mode in failing_modes:

            def raise_oom(module, args):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            loaded.pipe.unet.register_forward_pre_hook(raise_oom)
        return loaded

    monkeypatch.setattr(pipelines, "load_pipeline", load)
    pipelines.release()
    return seen


def test_out_of_memory_retries_once_in_a_leaner_mode(weights, tmp_path, monkeypatch):
    seen = _oom_on_load(monkeypatch, {"full"})
    result = shot(weights, tmp_path, memory_mode="full")
    assert seen == ["full", "vae_tiling"]
    assert result.memory_mode == "vae_tiling" and result.params["oom_retries"] == 1
    assert result.frames.shape == (4, 64, 64, 3)
    pipelines.release()


def test_out_of_memory_twice_says_what_to_lower(weights, tmp_path, monkeypatch):
    seen = _oom_on_load(monkeypatch, {"full", "vae_tiling"})
    with pytest.raises(OutOfMemory, match="lower the frame count or the size"):
        shot(weights, tmp_path, memory_mode="full")
    assert seen == ["full", "vae_tiling"] and pipelines.current() is None
    assert not any(tmp_path.iterdir())


def test_cancel_between_steps_writes_nothing(weights, tmp_path):
    token = CancelToken()

    def progress(fraction, message):
        if message.startswith("step 1/"):
            token.cancel()

    with pytest.raises(Cancelled):
        generate(
            ShotSpec(prompt="a fox", frames=4, width=64, height=64, steps=3),
            bar_depth(),
            on_progress=progress,
            cancel=token,
            weights_root=weights,
            runtime=CPU,
            out_dir=tmp_path,
        )
    assert not any(tmp_path.iterdir())


def test_cli_generates_from_a_depth_folder(weights, tmp_path, capsys):
    depth_dir = bar_depth().save(tmp_path / "depth")
    out = tmp_path / "shots"
    code = main([
        "generate", "--prompt", "a fox", "--depth", str(depth_dir), "--frames", "4", "--steps", "2",
        "--size", "64x64", "--weights", str(weights), "--out", str(out), "--device", "cpu", "--json",
    ])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] and result["tiny"] and result["frames"] == 4
    assert probe(result["video"]).frame_count == 4
    code = main(["generate", "--prompt", "a fox", "--depth", str(depth_dir), "--size", "60x64", "--json"])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and "multiple of 8" in error["error"]


def test_cli_runs_the_depth_step_first_for_a_clip(weights, tmp_path, capsys):
    ensure_tiny(weights, "depth-anything-v2-small")
    clip = write_clip(tmp_path / "walk.mp4", moving_square_frames(frames=12, size=(96, 64)))
    code = main([
        "generate", "--prompt", "a fox", "--depth", str(clip), "--clip-start", "0", "--clip-end", "1.5",
        "--frames", "4", "--steps", "1", "--size", "64x64", "--weights", str(weights), "--out", str(tmp_path / "shots"),
        "--device", "cpu", "--json",
    ])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["frames"] == 4
    params = json.loads((tmp_path / "shots" / result["folder"].split("/")[-1] / "params.json").read_text())
    assert params["depth"]["source"].endswith("walk.mp4") and params["depth"]["estimator"] == "depth-anything-v2-small"


def test_concepts_are_applied_for_the_shot_and_removed_after(weights, tmp_path):
    import torch

    from aas_core.concepts import Concept
    from aas_core.concepts.store import write_concept

    table = torch.randn(4, 2, 32, generator=torch.Generator().manual_seed(0)) * 3
    meta = Concept(name="alice", class_word="person", buckets=4, vectors=2, dim=32, base_model="sd15", tiny=True)
    alice = write_concept(meta, table, weights, overwrite=True)
    before = shot(weights, tmp_path, prompt="<alice> walking")
    with_concept = generate(
        ShotSpec(prompt="<alice> walking", frames=4, width=64, height=64, steps=2, seed=3),
        bar_depth(), concepts=[alice], weights_root=weights, runtime=CPU, out_dir=tmp_path,
    )
    after = shot(weights, tmp_path, prompt="<alice> walking")
    assert with_concept.params["concepts"] == ["alice"]
    # Text steers the tiny random UNet only weakly, but the concept's embedding does reach it.
    assert np.abs(before.frames.astype(int) - with_concept.frames).mean() > 0.05
    assert np.array_equal(before.frames, after.frames)
    assert len(pipelines.current().pipe.tokenizer) == 49408
