"""Concepts inside real pipelines: the right bucket at every timestep, several concepts, CFG, LoRA, clean exit."""

from __future__ import annotations

import numpy as np
import pytest

from aas_core.concepts import Concept, apply_concepts, import_lora, load_concept, load_parts
from aas_core.concepts.store import write_concept
from aas_core.concepts.timeinv import SwapEntry, TokenSwap, bucket_of, tokenize
from aas_core.device import Runtime
from aas_core.errors import InputError
from tests.test_concepts import concept_root

CPU = Runtime(device="cpu", dtype_name="float32")
ANIMATEDIFF = ("sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15")


@pytest.fixture(scope="module")
def root(tiny_root, tmp_path_factory):
    return concept_root(tiny_root, tmp_path_factory.mktemp("inject_weights"), *ANIMATEDIFF)


def make_concept(root, name: str, buckets: int, seed: int, lora: dict | None = None, photos=()) -> Concept:
    """A saved concept with a random table whose buckets differ strongly."""
    import torch

    table = torch.randn(buckets, 2, 32, generator=torch.Generator().manual_seed(seed)) * 3
    meta = Concept(name=name, class_word="person", buckets=buckets, vectors=2, dim=32, base_model="sd15", tiny=True)
    return write_concept(meta, table, root, overwrite=True, photos=photos, lora_tensors=lora)


def sd_pipe(root):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    p = load_parts("sd15", root, CPU)
    pipe = StableDiffusionPipeline(
        vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet,
        scheduler=DDIMScheduler.from_config(p.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Recorder:
    """A pre-hook registered after apply_concepts' own: sees what the model really receives."""

    def __init__(self, *modules):
        self.calls = []
        self.handles = [m.register_forward_pre_hook(self.hook, with_kwargs=True) for m in modules]

    def hook(self, module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.calls.append((type(module).__name__, int(t), kwargs["encoder_hidden_states"].detach().clone()))

    def remove(self):
        for h in self.handles:
            h.remove()


def expected_rows(root, prompt: str, concepts, timestep: int):
    """The prompt encoded with one-bucket copies of each concept's bucket at `timestep` (independent path)."""
    import copy

    import torch

    parts = load_parts("sd15", root, CPU)
    entries = []
    for c in concepts:
        k = bucket_of(timestep, c.buckets)
        entries.append(SwapEntry(c.token, c.table()[k : k + 1]))
    swap = TokenSwap(copy.deepcopy(parts.tokenizer), parts.text_encoder, entries).install()
    try:
        with torch.no_grad():
            return swap.encode([prompt])[0]
    finally:
        swap.remove()


def plain_encoding(root, prompt: str):
    import torch

    parts = load_parts("sd15", root, CPU)
    with torch.no_grad():
        return parts.text_encoder(tokenize(parts.tokenizer, [prompt]))[0][0]


def test_two_concepts_get_their_own_bucket_at_each_step_and_negative_half_is_untouched(root):
    import torch

    alice, bob = make_concept(root, "alice", 4, 0), make_concept(root, "bob", 2, 1)
    pipe = sd_pipe(root)
    prompt, negative = "<alice> and <bob> walk", "blurry"
    kwargs = dict(negative_prompt=negative, num_inference_steps=3, guidance_scale=7.5, height=64, width=64, output_type="np")
    before = pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
    with apply_concepts(pipe, [alice, bob], "animatediff", base_model="sd15") as applied:
        recorder = Recorder(pipe.unet)
        try:
            images = pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
        finally:
            recorder.remove()
    assert [t for _, t, _ in recorder.calls] == [667, 334, 1]  # DDIM, 3 steps: alice buckets 2, 1, 0
    negative_rows = plain_encoding(root, negative)
    for _, t, hidden in recorder.calls:
        assert hidden.shape == (2, 77, 32)
        torch.testing.assert_close(hidden[0], negative_rows)
        torch.testing.assert_close(hidden[1], expected_rows(root, prompt, [alice, bob], t), rtol=1e-5, atol=1e-5)
    assert applied.buckets_used == [(667, {"alice": 2, "bob": 1}), (334, {"alice": 1, "bob": 0}), (1, {"alice": 0, "bob": 0})]
    assert not np.allclose(images, before)
    # Everything is undone on exit: tokenizer, hooks, and the very same images as before.
    assert len(pipe.tokenizer) == 49408 and pipe.tokenizer is load_parts("sd15", root, CPU).tokenizer
    assert not pipe.unet._forward_pre_hooks and not pipe.text_encoder._forward_hooks
    assert not pipe.text_encoder.get_input_embeddings()._forward_hooks
    after = pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert np.array_equal(after, before)


def test_incompatible_concepts_are_refused(root):
    import torch

    wide = Concept(name="wide", class_word="x", buckets=1, vectors=1, dim=768, base_model="sd15")
    wide._table = torch.zeros(1, 1, 768)
    pipe = sd_pipe(root)
    with pytest.raises(InputError, match="768-wide vectors"):
        with apply_concepts(pipe, [wide]):
            pass
    other = make_concept(root, "other", 2, 3)
    other.base_model = "sd21"
    with pytest.raises(InputError, match="trained on base model 'sd21'"):
        with apply_concepts(pipe, [other], base_model="sd15"):
            pass
    with pytest.raises(InputError, match="unknown backend"):
        with apply_concepts(pipe, [other], "svd"):  # type: ignore[arg-type]
            pass
    assert len(pipe.tokenizer) == 49408


def _cross_attention_lora(root, value: float = 0.5) -> dict:
    import torch

    unet = load_parts("sd15", root, CPU).unet
    gen = torch.Generator().manual_seed(5)
    tensors = {}
    for name, module in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v")):
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=gen) * value
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=gen) * value
    return tensors


def test_concept_lora_is_loaded_for_the_block_and_fully_removed(root, tmp_path):
    import torch
    from safetensors.torch import save_file

    lora = _cross_attention_lora(root)
    with_lora = make_concept(root, "hat", 2, 7, lora=lora)
    without = make_concept(root, "nohat", 2, 7)
    pipe = sd_pipe(root)
    kwargs = dict(num_inference_steps=2, guidance_scale=1.0, height=64, width=64, output_type="np")
    keys = set(pipe.unet.state_dict())
    outs = {}
    for concept in (with_lora, without):
        with apply_concepts(pipe, [concept]):
            outs[concept.name] = pipe(f"a photo of {concept.token}", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not np.allclose(outs["hat"], outs["nohat"])
    assert set(pipe.unet.state_dict()) == keys  # no adapter layers left behind
    again = apply_concepts(pipe, [without])
    with again:
        assert np.array_equal(pipe("a photo of <nohat>", generator=torch.Generator().manual_seed(0), **kwargs).images, outs["nohat"])

    save_file(lora, str(tmp_path / "hat.safetensors"))
    imported = import_lora(tmp_path / "hat.safetensors", "red-hat", trigger="red hat", root=root, overwrite=True)
    parts = load_parts("sd15", root, CPU)
    ids = parts.tokenizer("red hat", add_special_tokens=False).input_ids
    assert imported.lora and imported.source == "imported-lora" and imported.table().shape == (1, 2, 32)
    torch.testing.assert_close(imported.table()[0], parts.text_encoder.get_input_embeddings().weight[ids])
    save_file({k: torch.randn(v.shape[0], 2048) if "to_k.lora_A" in k else v for k, v in lora.items()}, str(tmp_path / "xl.safetensors"))
    with pytest.raises(InputError, match="2048-wide"):
        import_lora(tmp_path / "xl.safetensors", "xl", trigger="x", root=root)
    with pytest.raises(InputError, match="trigger"):
        import_lora(tmp_path / "hat.safetensors", "nothing", root=root)


# --- with the generation engine's AnimateDiff + ControlNet pipeline -----------------------------------------


@pytest.fixture(scope="module")
def animatediff(root):
    from aas_core.generate import pipelines

    pipelines.release()
    yield pipelines.get_pipeline("animatediff", root, CPU, "full").pipe
    pipelines.release()


def test_animatediff_unet_and_controlnet_get_the_bucket_of_each_step(root, animatediff):
    import torch
    from PIL import Image

    pipe = animatediff
    alice = make_concept(root, "alice", 4, 0)
    frames = 3
    with apply_concepts(pipe, [alice]) as applied:
        recorder = Recorder(pipe.unet, pipe.controlnet)
        try:
            pipe(prompt="<alice> waves", negative_prompt="", num_frames=frames, height=64, width=64,
                 conditioning_frames=[Image.new("RGB", (64, 64), (128, 128, 128))] * frames, num_inference_steps=2,
                 guidance_scale=7.5, generator=torch.Generator().manual_seed(0), output_type="np")
        finally:
            recorder.remove()
    modules = {name for name, _, _ in recorder.calls}
    assert modules == {"UNetMotionModel", "ControlNetModel"} and len(recorder.calls) == 4
    assert applied.buckets_used == [(t, {"alice": bucket_of(t, 4)}) for _, t, _ in recorder.calls]
    assert len({b["alice"] for _, b in applied.buckets_used}) == 2  # two steps, two different buckets
    negative = plain_encoding(root, "")
    for name, t, hidden in recorder.calls:
        want = expected_rows(root, "<alice> waves", [alice], t)
        # The pipeline repeats the [negative, prompt] rows once per frame for both models.
        assert hidden.shape[0] == 2 * frames
        for row in range(frames):
            torch.testing.assert_close(hidden[row], negative)
            torch.testing.assert_close(hidden[frames + row], want, rtol=1e-5, atol=1e-5)
    assert not pipe.unet._forward_pre_hooks and not pipe.controlnet._forward_pre_hooks


def test_freenoise_long_shots_swap_every_frames_prompt_row(root):
    import torch
    from PIL import Image

    from aas_core.generate import pipelines

    pipe = pipelines.load_pipeline("animatediff", root, CPU, "full").pipe  # its own: FreeNoise stays on
    pipe.enable_free_noise(context_length=8, context_stride=4)
    alice = make_concept(root, "alice", 4, 0)
    frames = 10
    with apply_concepts(pipe, [alice]):
        recorder = Recorder(pipe.unet)
        try:
            pipe(prompt="<alice> waves", negative_prompt="", num_frames=frames, height=64, width=64,
                 conditioning_frames=[Image.new("RGB", (64, 64), (128, 128, 128))] * frames, num_inference_steps=2,
                 guidance_scale=7.5, generator=torch.Generator().manual_seed(0), output_type="np")
        finally:
            recorder.remove()
    negative = plain_encoding(root, "")
    for _, t, hidden in recorder.calls:
        want = expected_rows(root, "<alice> waves", [alice], t)
        swapped = [torch.allclose(row, want, atol=1e-5) for row in hidden]
        untouched = [torch.allclose(row, negative, atol=1e-5) for row in hidden]
        assert sum(swapped) == frames and sum(untouched) == frames


def test_save_load_generate_reproduces_the_same_frames(root, animatediff, tmp_path):
    from aas_core.generate import ShotSpec, generate
    from tests.test_generate import bar_depth

    saved = make_concept(root, "alice", 4, 0)
    loaded = load_concept("alice", root, base_model="sd15")
    spec = ShotSpec(prompt="<alice> walks in the snow", frames=3, width=64, height=64, steps=2, seed=1)
    first = generate(spec, bar_depth(), concepts=[saved], weights_root=root, runtime=CPU, out_dir=tmp_path)
    second = generate(spec, bar_depth(), concepts=[loaded], weights_root=root, runtime=CPU, out_dir=tmp_path)
    other = generate(spec, bar_depth(), concepts=[make_concept(root, "alice", 4, 9)], weights_root=root, runtime=CPU, out_dir=tmp_path)
    assert np.array_equal(first.frames, second.frames)
    assert not np.array_equal(first.frames, other.frames)
    assert first.params["concepts"] == ["alice"]


def test_vace_backend_gets_reference_images_and_leaves_the_pipe_alone(root):
    from PIL import Image

    photo = Image.new("RGB", (64, 64), (200, 30, 30))
    concept = make_concept(root, "refs", 1, 2, photos=[photo, photo])
    assert [img.size for img in concept.reference_images()] == [(64, 64)] * 2
    assert np.asarray(concept.reference_images()[0])[0, 0].tolist() == [200, 30, 30]

    pipe = sd_pipe(root)
    tokenizer = pipe.tokenizer
    with apply_concepts(pipe, [concept], "vace") as applied:
        assert applied.concepts == [concept] and pipe.tokenizer is tokenizer and not pipe.unet._forward_pre_hooks
