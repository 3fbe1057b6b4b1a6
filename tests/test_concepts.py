"""Concepts: photos, names, TimeInv buckets, training on the tiny SD1.5, resume, concept folders, TI files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aas_core.cli import main
from aas_core.concepts import (
    Photo,
    TimeInvTrainer,
    TrainSettings,
    bucket_of,
    concept_names_in,
    delete_concept,
    export_textual_inversion,
    import_textual_inversion,
    list_concepts,
    load_concept,
    load_parts,
    load_photo,
    parse_photo_arg,
    train_concept,
)
from aas_core.concepts.photos import augmented_views, load_photos, square_crop
from aas_core.concepts.store import concepts_dir, training_dir
from aas_core.concepts.timeinv import SwapEntry, TokenSwap, bucket_edges
from aas_core.device import Runtime
from aas_core.errors import Cancelled, InputError
from aas_core.fsutil import file_digest
from tests.helpers import ensure_tiny

CPU = Runtime(device="cpu", dtype_name="float32")
FAST = dict(steps=4, buckets=4, vectors=2, batch_size=2, views_per_photo=2, validate_every=2,
            validation_inference_steps=2, checkpoint_every=2)


def concept_root(tiny_root: Path, tmp: Path, *models: str) -> Path:
    """A weights folder of its own (so concept names never clash with other tests) linking the tiny models."""
    ensure_tiny(tiny_root, *models)
    for name in models:
        (tmp / name).symlink_to(tiny_root / name, target_is_directory=True)
    return tmp


def make_photo(path: Path, size=(96, 80), seed: int = 0, fmt: str | None = None) -> Path:
    """A character-like photo: a coloured figure on a noisy background."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    pixels[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = (220, 60 + 20 * seed, 40)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture(scope="module")
def root(tiny_root, tmp_path_factory):
    return concept_root(tiny_root, tmp_path_factory.mktemp("concept_weights"), "sd15")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return [make_photo(folder / f"p{i}.png", seed=i) for i in range(3)]


def _weight_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_digest(p) for p in sorted((root / "sd15").rglob("*.safetensors"))}


@pytest.fixture(scope="module")
def trained(root, photos):
    """`alice`, trained for 4 steps (validation images and checkpoints every 2)."""
    before = _weight_digests(root)
    progress = []
    result = train_concept("alice", "woman", photos, TrainSettings(**FAST), root=root, runtime=CPU,
                           on_progress=lambda f, m: progress.append((f, m)))
    return result, before, progress


# --- names, buckets, photos -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "a b", "Alice", "", "x" * 41, "-x", "a/b", "<x>"])
def test_unsafe_names_are_refused_before_anything_is_written(root, photos, bad):
    with pytest.raises(InputError, match="not allowed"):
        train_concept(bad, "woman", photos, TrainSettings(**FAST), root=root, runtime=CPU)
    assert not (root / "x").exists() and not (root.parent / "x").exists()


def test_bucket_lookup_covers_the_schedule_evenly():
    assert [bucket_of(t, 4) for t in (0, 249, 250, 499, 500, 750, 999, 1000, -3)] == [0, 0, 1, 1, 2, 3, 3, 3, 0]
    assert {bucket_of(t, 1) for t in range(0, 1000, 37)} == {0}
    assert bucket_edges(4) == [0, 250, 500, 750] and bucket_edges(3) == [0, 334, 667]
    assert concept_names_in("<alice> and <bob> walk past <alice>") == ["alice", "bob"]


def test_exif_orientation_box_and_augmentation(tmp_path):
    from PIL import Image

    pixels = np.zeros((120, 80, 3), np.uint8)
    pixels[:, :40] = (255, 0, 0)  # stored: red on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    img = load_photo(tmp_path / "phone.jpg")
    assert img.size == (120, 80)  # displayed width x height
    upright = np.asarray(img)
    assert upright[:30, :, 0].mean() > 200 and upright[50:, :, 0].mean() < 60  # red is now on top
    boxed = load_photo(parse_photo_arg(f"{tmp_path / 'phone.jpg'}@10,0,60,40"))
    assert boxed.size == (50, 40) and np.asarray(boxed)[..., 0].mean() > 200
    views = augmented_views(img, 64, 5, __import__("random").Random(0), flip=True, scale_jitter=0.3)
    assert len(views) == 5 and all(v.size == (64, 64) for v in views)
    assert np.array_equal(np.asarray(views[0]), np.asarray(square_crop(img, 64)))
    assert len({np.asarray(v).tobytes() for v in views}) == 5
    flipped = square_crop(img, 64, flip=True)
    assert np.array_equal(np.asarray(flipped), np.asarray(square_crop(img, 64))[:, ::-1])


def test_bad_photos_say_what_to_do(tmp_path):
    make_photo(tmp_path / "ok.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    make_photo(tmp_path / "small.png", size=(20, 20))
    make_photo(tmp_path / "photo.bmp", fmt="BMP")
    with pytest.raises(InputError, match="no photos"):
        load_photos([], 64)
    for name, message in [("notes.jpg", "not a readable image"), ("cut.png", "not a readable image"),
                          ("small.png", "too small"), ("photo.bmp", "use jpg, png or webp"), ("missing.png", "does not exist")]:
        with pytest.raises(InputError, match=message):
            load_photos([tmp_path / "ok.png", tmp_path / name], 64)
    with pytest.raises(InputError, match="does not fit"):
        load_photos([Photo(str(tmp_path / "ok.png"), (0, 0, 500, 10))], 64)
    images, warnings = load_photos([tmp_path / "ok.png"], 64)
    assert len(images) == 1 and "only 1 photo" in warnings[0]


# --- training ---------------------------------------------------------------------------------------------


def test_training_writes_a_complete_concept_folder(trained, root):
    result, _, progress = trained
    concept = result.concept
    folder = concepts_dir(root) / "alice"
    assert concept.folder == folder and len(result.losses) == 4 and all(np.isfinite(result.losses))
    meta = json.loads((folder / "concept.json").read_text())
    assert meta["token"] == "<alice>" and meta["class_word"] == "woman" and meta["base_model"] == "sd15"
    assert (meta["buckets"], meta["vectors"], meta["dim"]) == (4, 2, 32) and meta["tiny"] is True
    assert meta["settings"]["steps"] == 4 and meta["settings"]["resolution"] == 64 and meta["settings"]["seed"] == 0
    assert meta["bucket_edges"] == [0, 250, 500, 750]
    assert [(folder / t).is_file() for t in meta["thumbnails"] + meta["photos"]] == [True] * 6
    assert meta["validation"] == ["validation/step_000002.png", "validation/step_000004.png"]
    assert not training_dir("alice", root).exists()  # the checkpoint is gone once the concept is saved
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    loaded = load_concept("alice", root)
    assert loaded.table().shape == (4, 2, 32) and loaded.table().dtype.is_floating_point
    assert [c.name for c in list_concepts(root)] == ["alice"]
    assert [img.size for img in loaded.reference_images()] == [(64, 64)] * 3
    assert progress[-1][0] == 1.0 and any("step 4/4" in m for _, m in progress)


def test_only_the_concept_changes_base_weights_bit_identical(trained, root):
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    result, before, _ = trained
    assert _weight_digests(root) == before
    parts = load_parts("sd15", root, CPU)  # the cached modules training ran on
    fresh_unet = UNet2DConditionModel.from_pretrained(root / "sd15" / "unet")
    fresh_text = CLIPTextModel.from_pretrained(root / "sd15" / "text_encoder")
    for live, fresh in ((parts.unet, fresh_unet), (parts.text_encoder, fresh_text)):
        live_state, fresh_state = live.state_dict(), fresh.state_dict()
        assert live_state.keys() == fresh_state.keys()
        assert all(torch.equal(live_state[k], fresh_state[k]) for k in live_state)
        assert not any(p.requires_grad for p in live.parameters())
        assert not live._forward_hooks and not live._forward_pre_hooks
    assert not parts.text_encoder.get_input_embeddings()._forward_hooks
    assert len(parts.tokenizer) == 49408  # the shared tokenizer never got the concept tokens
    table = result.concept.table()
    start = fresh_text.get_input_embeddings().weight[parts.tokenizer("woman", add_special_tokens=False).input_ids].mean(0)
    assert not torch.allclose(table, start.expand_as(table))  # the table itself did learn


def test_loss_falls_with_fixed_noise_and_each_bucket_learns_only_from_its_timesteps(root, photos):
    import torch

    parts = load_parts("sd15", root, CPU)
    images, _ = load_photos(photos, 64)
    trainer = TimeInvTrainer(parts, "fixed", "woman", images, TrainSettings(buckets=4, vectors=2, lr=0.1, batch_size=3), CPU)
    try:
        start = trainer.table.detach().clone()
        latents, noise, _, texts = trainer.batch(0)
        batch = (latents, noise, torch.tensor([100, 500, 900]), texts)  # buckets 0, 2, 3: bucket 1 never sampled
        losses = [trainer.step(batch) for _ in range(15)]
        table = trainer.table.detach()
    finally:
        trainer.close()
    # Measured 3.0% (1.1372 -> 1.1028) on this random model; a step that does not learn leaves it unchanged.
    assert losses[-1] < 0.985 * losses[0] and min(losses[-5:]) < losses[0]
    assert torch.equal(table[1], start[1])
    assert all(not torch.allclose(table[k], start[k]) for k in (0, 2, 3))


def test_timestep_selects_each_rows_bucket_in_the_text_encoder(root):
    import copy

    import torch

    parts = load_parts("sd15", root, CPU)
    table = torch.randn(4, 2, 32)
    tokenizer = copy.deepcopy(parts.tokenizer)
    swap = TokenSwap(tokenizer, parts.text_encoder, [SwapEntry("<x>", table)]).install()
    try:
        with torch.no_grad():
            mixed = swap.encode(["a photo of <x>", "a photo of <x>"], torch.tensor([100, 900]))
            per_bucket = [swap.encode(["a photo of <x>"], torch.tensor([t]))[0] for t in (0, 250, 500, 750)]
            mean = swap.encode(["a photo of <x>"])[0]
    finally:
        swap.remove()
    torch.testing.assert_close(mixed[0], per_bucket[0])
    torch.testing.assert_close(mixed[1], per_bucket[3])
    assert all(not torch.allclose(per_bucket[i], per_bucket[j]) for i in range(4) for j in range(i + 1, 4))
    assert not any(torch.allclose(mean, b) for b in per_bucket)
    tok2 = copy.deepcopy(parts.tokenizer)
    single = TokenSwap(tok2, parts.text_encoder, [SwapEntry("<x>", table[2:3])]).install()
    try:
        with torch.no_grad():
            torch.testing.assert_close(single.encode(["a photo of <x>"])[0], per_bucket[2])
    finally:
        single.remove()


def test_cancel_keeps_a_checkpoint_and_resume_matches_an_uninterrupted_run(root, photos):
    import torch

    settings = TrainSettings(**{**FAST, "validate_every": 0, "checkpoint_every": 0})
    straight = train_concept("resume", "woman", photos, settings, root=root, runtime=CPU).concept.table().clone()
    delete_concept("resume", root)
    from aas_core.progress import CancelToken

    token = CancelToken()
    with pytest.raises(Cancelled, match="run it again to resume"):
        train_concept("resume", "woman", photos, settings, root=root, runtime=CPU, cancel=token,
                      on_progress=lambda f, m: token.cancel() if m.startswith("step 2/") else None)
    assert (training_dir("resume", root) / "state.safetensors").is_file()
    assert not (concepts_dir(root) / "resume").exists()  # no half-written concept
    resumed = train_concept("resume", "woman", photos, settings, root=root, runtime=CPU)
    assert resumed.resumed_from == 2 and len(resumed.losses) == 4
    assert torch.equal(resumed.concept.table(), straight)
    delete_concept("resume", root)


def test_lora_training_saves_cross_attention_adapters_and_restores_the_unet(root, photos):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    settings = TrainSettings(**{**FAST, "steps": 2, "lora": True, "lora_rank": 2, "validate_every": 0,
                                "gradient_checkpointing": True})
    concept = train_concept("lora-cat", "cat", photos, settings, root=root, runtime=CPU).concept
    assert concept.lora and concept.lora_path.is_file()
    tensors = load_file(str(concept.lora_path))
    assert tensors and all(k.startswith("unet.") and (".attn2.to_k." in k or ".attn2.to_v." in k) for k in tensors)
    assert any(".lora_A." in k for k in tensors) and any(torch.count_nonzero(v) for k, v in tensors.items() if ".lora_B." in k)
    unet = load_parts("sd15", root, CPU).unet
    fresh = UNet2DConditionModel.from_pretrained(root / "sd15" / "unet").state_dict()
    assert unet.state_dict().keys() == fresh.keys() and not unet.is_gradient_checkpointing
    assert all(torch.equal(v, fresh[k]) for k, v in unet.state_dict().items())


def test_existing_name_other_base_and_bad_settings(trained, root, photos):
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        train_concept("alice", "woman", photos, TrainSettings(**FAST), root=root, runtime=CPU)
    with pytest.raises(InputError, match="trained on base model 'sd15'"):
        load_concept("alice", root, base_model="wan2.1-vace-1.3b")
    with pytest.raises(InputError, match="no concept named"):
        load_concept("nobody", root)
    with pytest.raises(InputError, match="class word"):
        train_concept("bob", "  ", photos, TrainSettings(**FAST), root=root, runtime=CPU)
    with pytest.raises(InputError, match="no photos"):
        train_concept("bob", "man", [], TrainSettings(**FAST), root=root, runtime=CPU)
    with pytest.raises(InputError, match="buckets must be at least 1"):
        train_concept("bob", "man", photos, TrainSettings(**{**FAST, "buckets": 0}), root=root, runtime=CPU)
    assert not (concepts_dir(root) / "bob").exists()


# --- standard textual inversion files ---------------------------------------------------------------------


def test_ti_export_loads_in_diffusers_and_imports_back(trained, root, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    concept = load_concept("alice", root)
    out = export_textual_inversion(concept, tmp_path / "alice.safetensors")
    tensors = load_file(str(out))
    assert list(tensors) == ["<alice>"]
    torch.testing.assert_close(tensors["<alice>"], concept.table().mean(0))

    pipe = StableDiffusionPipeline.from_pretrained(root / "sd15", safety_checker=None, requires_safety_checker=False)
    pipe.load_textual_inversion(str(out))
    with torch.no_grad():
        theirs = pipe.encode_prompt("a photo of <alice>", "cpu", 1, False)[0][0]
    imported = import_textual_inversion(out, "alice-ti", "woman", root=root)
    assert imported.source == "imported-ti" and (imported.buckets, imported.vectors) == (1, 2)
    torch.testing.assert_close(imported.table()[0], concept.table().mean(0))
    parts = load_parts("sd15", root, CPU)
    import copy

    swap = TokenSwap(copy.deepcopy(parts.tokenizer), parts.text_encoder, [SwapEntry("<alice>", imported.table())]).install()
    try:
        with torch.no_grad():
            ours = swap.encode(["a photo of <alice>"])[0]
    finally:
        swap.remove()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    torch.save({"string_to_param": {"*": torch.randn(3, 32)}, "name": "a1111"}, tmp_path / "a1111.pt")
    assert import_textual_inversion(tmp_path / "a1111.pt", "a1111", root=root).vectors == 3
    from safetensors.torch import save_file

    save_file({"emb_params": torch.randn(2, 768)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(InputError, match="768-wide"):
        import_textual_inversion(tmp_path / "wide.safetensors", "wide", root=root)
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(tmp_path / "xl.safetensors"))
    with pytest.raises(InputError, match="SDXL"):
        import_textual_inversion(tmp_path / "xl.safetensors", "xl", root=root)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="could not be read"):
        import_textual_inversion(tmp_path / "junk.safetensors", "junk", root=root)
    for name in ("alice-ti", "a1111"):
        delete_concept(name, root)


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_train_list_show_export_delete(root, photos, tmp_path, capsys):
    args = ["--weights", str(root), "--json"]
    code = main(["--device", "cpu", "--dtype", "float32", "concept", "train", "--name", "cli-cat", "--class-word", "cat",
                 *map(str, photos[:1]), "--steps", "2", "--buckets", "2", "--vectors", "1", "--batch-size", "1",
                 "--validate-every", "0", *args])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] and result["concept"]["token"] == "<cli-cat>" and len(result["losses"]) == 2
    assert any("only 1 photo" in w for w in result["warnings"])
    assert main(["concept", "list", *args]) == 0
    assert "cli-cat" in [c["name"] for c in json.loads(capsys.readouterr().out)["concepts"]]
    assert main(["concept", "show", "cli-cat", *args]) == 0
    assert json.loads(capsys.readouterr().out)["concept"]["buckets"] == 2
    assert main(["concept", "export", "cli-cat", str(tmp_path / "c.safetensors"), *args]) == 0
    assert json.loads(capsys.readouterr().out)["exported"].endswith("c.safetensors")
    assert main(["concept", "delete", "cli-cat", *args]) == 0
    capsys.readouterr()
    assert not (concepts_dir(root) / "cli-cat").exists()
    code = main(["concept", "train", "--name", "../x", "--class-word", "cat", str(photos[0]), *args])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and not error["ok"] and "not allowed" in error["error"]
    assert main(["concept", "delete", "cli-cat", *args]) == 2
