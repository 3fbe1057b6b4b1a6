"""Instant characters: IP-Adapter concepts made from photos, applied in shots and removed after, bad files refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aas_core.cli import main
from aas_core.concepts import TrainSettings, load_concept, train_concept
from aas_core.concepts.ip_adapter import (
    EMBEDS_FILE,
    IP_VARIANTS,
    adapter_file,
    make_ip_concept,
)
from aas_core.concepts.store import TABLE_FILE
from aas_core.device import Runtime
from aas_core.errors import InputError
from aas_core.generate import ShotSpec, generate, pipelines
from tests.helpers import ensure_tiny
from tests.test_concepts import FAST, concept_root, make_photo
from tests.test_generate import bar_depth

CPU = Runtime(device="cpu", dtype_name="float32")
MODELS = ("sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15", "ip-adapter-sd15")


def fresh_pipelines(tiny_root, folder, models):
    """A weights folder linking tiny `models`, with no pipeline loaded before or after the module."""
    pipelines.release()
    yield concept_root(tiny_root, folder, *models)
    pipelines.release()


@pytest.fixture(scope="module")
def root(tiny_root, tmp_path_factory):
    yield from fresh_pipelines(tiny_root, tmp_path_factory.mktemp("ip_weights"), MODELS)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ip_photos")
    return [make_photo(folder / f"p{i}.png", size=(160, 140), seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def bob(root, photos):
    return make_ip_concept("bob", "man", photos, ip_scale=1.0, root=root, runtime=CPU)


def _shot(root, tmp_path, prompt: str, concepts=(), **fields):
    spec = ShotSpec(prompt=prompt, frames=4, width=64, height=64, steps=2, seed=3, **fields)
    return generate(spec, bar_depth(), concepts=list(concepts), weights_root=root, runtime=CPU, out_dir=tmp_path)


def _processors(pipe) -> dict[str, str]:
    return {name: type(p).__name__ for name, p in pipe.unet.attn_processors.items()}


def test_ip_concept_is_photos_and_embeddings_without_training(bob, root):
    folder = bob.folder
    assert bob.method == "ip-adapter" and bob.uses_ip and not bob.has_table and bob.tiny
    assert not (folder / TABLE_FILE).exists() and (folder / EMBEDS_FILE).is_file()
    embeds = bob.ip_embeds()
    assert embeds["image_embeds"].shape[0] == embeds["hidden"].shape[0] == 3 == len(bob.photos)
    assert embeds["uncond_hidden"].shape[0] == 1 and embeds["hidden"].shape[1:] == embeds["uncond_hidden"].shape[1:]
    loaded = load_concept("bob", root, base_model="sd15")
    assert loaded.ip_scale == 1.0 and loaded.ip_variant == "plus" and len(loaded.reference_images()) == 3
    with pytest.raises(InputError, match="no learnt vectors"):
        loaded.table()


def test_ip_concept_changes_the_shot_and_is_removed_cleanly(bob, root, tmp_path):
    before = _shot(root, tmp_path, "man walking")
    pipe = pipelines.current().pipe
    processors = _processors(pipe)
    with_bob = _shot(root, tmp_path, "<bob> walking", [bob])
    after = _shot(root, tmp_path, "man walking")
    assert np.abs(before.frames.astype(int) - with_bob.frames).mean() > 0.5
    assert np.array_equal(before.frames, after.frames)
    assert _processors(pipe) == processors and pipe.unet.encoder_hid_proj is None
    assert pipe.unet.config.encoder_hid_dim_type is None and pipe.feature_extractor is None
    record = with_bob.params["ip_adapter"]
    assert record == [{"concept": "bob", "variant": "plus", "scale": 1.0, "photos": 3, "region": "whole frame"}]


def test_ip_concept_token_reads_as_its_class_word(bob, root, tmp_path):
    # Without vectors `<bob>` is the word "man"; at scale 0 the photos add nothing, so the shot is the plain text one.
    silent = _shot(root, tmp_path, "<bob> walking", [bob], ip_scale=0.0)
    plain = _shot(root, tmp_path, "man walking")
    assert np.array_equal(silent.frames, plain.frames)


def test_per_shot_scale_overrides_the_concepts(bob, root, tmp_path):
    weak = _shot(root, tmp_path, "<bob> walking", [bob], ip_scale=0.3)
    strong = _shot(root, tmp_path, "<bob> walking", [bob])
    assert weak.params["ip_adapter"][0]["scale"] == 0.3 and weak.params["spec"]["ip_scale"] == 0.3
    assert not np.array_equal(weak.frames, strong.frames)
    with pytest.raises(InputError, match="ip_scale must be between 0 and 2"):
        ShotSpec(prompt="x", ip_scale=3.0)


@pytest.mark.parametrize("variant", IP_VARIANTS)
def test_every_variant_loads_from_the_hub_layout(root, photos, variant, tmp_path):
    concept = make_ip_concept(f"v-{variant}", "man", photos[:1], variant=variant, root=root, runtime=CPU)
    result = _shot(root, tmp_path, f"<v-{variant}> walking", [concept])
    assert result.params["ip_adapter"][0]["variant"] == variant


def test_two_ip_characters_get_the_left_and_right_halves(bob, root, photos, tmp_path):
    eve = make_ip_concept("eve", "woman", photos[1:], root=root, runtime=CPU)
    both = _shot(root, tmp_path, "<bob> and <eve> talking", [bob, eve])
    assert [r["region"] for r in both.params["ip_adapter"]] == ["left half", "right half"]
    carl = make_ip_concept("carl", "man", photos[:1], root=root, runtime=CPU)
    with pytest.raises(InputError, match="train the others with TimeInv"):
        _shot(root, tmp_path, "<bob>, <eve> and <carl>", [bob, eve, carl])
    assert pipelines.current().pipe.unet.encoder_hid_proj is None


def test_both_trains_timeinv_and_conditions_on_the_photos(root, photos, tmp_path):
    result = train_concept("dora", "woman", photos, TrainSettings(**{**FAST, "validate_every": 0}), root=root,
                           runtime=CPU, method="both", ip_scale=0.8)
    dora = result.concept
    assert dora.method == "both" and dora.has_table and dora.uses_ip
    assert (dora.folder / TABLE_FILE).is_file() and (dora.folder / EMBEDS_FILE).is_file()
    shot = _shot(root, tmp_path, "<dora> walking", [dora])
    assert shot.params["ip_adapter"][0]["scale"] == 0.8
    vectors_only = _shot(root, tmp_path, "<dora> walking", [dora], ip_scale=0.0)
    assert not np.array_equal(shot.frames, vectors_only.frames)
    # The TimeInv vectors still act: at scale 0 the shot differs from the class word alone.
    plain = _shot(root, tmp_path, "woman walking")
    assert not np.array_equal(vectors_only.frames, plain.frames)


def test_identity_metric_reads_the_photos_of_every_kind(bob, root):
    from aas_core.library.embed import ClipEmbedder
    from aas_core.metrics import character_identity

    ensure_tiny(root, "clip-vit-b-32")
    embedder = ClipEmbedder.load("clip-vit-b-32", weights_root=root, runtime=CPU)
    frames = [np.asarray(img) for img in bob.reference_images()]
    assert character_identity(embedder, frames, frames) > 0.99


def test_bad_inputs_are_refused_clearly(root, photos, tmp_path):
    with pytest.raises(InputError, match="no photos given"):
        make_ip_concept("nobody", "man", [], root=root, runtime=CPU)
    pickle = tmp_path / "photo.png"
    import pickle as pickle_module

    pickle.write_bytes(pickle_module.dumps({"not": "an image"}))
    with pytest.raises(InputError, match="not a readable image"):
        make_ip_concept("pickled", "man", [pickle], root=root, runtime=CPU)
    with pytest.raises(InputError, match="ip-scale must be a number between 0 and 2"):
        make_ip_concept("loud", "man", photos, ip_scale=5, root=root, runtime=CPU)
    assert not (root / "concepts" / "nobody").exists()


def _private_weights(root: Path, tmp_path: Path) -> Path:
    """A weights folder whose ip-adapter-sd15 is a real copy (so a test may replace files in it)."""
    import shutil

    private = tmp_path / "weights"
    private.mkdir()
    for name in MODELS:
        if name == "ip-adapter-sd15":
            shutil.copytree((root / name).resolve(), private / name)
        else:
            (private / name).symlink_to((root / name).resolve(), target_is_directory=True)
    return private


def test_sdxl_and_pickle_adapter_files_are_refused(bob, root, tmp_path):
    import torch
    from safetensors.torch import save_file

    private = _private_weights(root, tmp_path)
    target = adapter_file("plus", private)
    # An SDXL adapter: the same keys, 2048-wide cross-attention projections.
    sdxl = {"image_proj.proj_in.weight": torch.zeros(64, 32), "ip_adapter.1.to_k_ip.weight": torch.zeros(640, 2048),
            "ip_adapter.1.to_v_ip.weight": torch.zeros(640, 2048)}
    save_file(sdxl, str(target))
    with pytest.raises(InputError, match="SDXL IP-Adapter"):
        _shot(private, tmp_path, "<bob> walking", [bob])
    assert pipelines.current().pipe.unet.encoder_hid_proj is None
    target.write_bytes(b"PK\x03\x04 a zip-wrapped pickle, as torch.save writes")
    with pytest.raises(InputError, match="never loaded"):
        _shot(private, tmp_path, "<bob> walking", [bob])


def test_vace_uses_the_photos_as_references_and_the_class_word(bob, tiny_root, root, tmp_path):
    ensure_tiny(tiny_root, "wan2.1-vace-1.3b")
    (root / "wan2.1-vace-1.3b").symlink_to(tiny_root / "wan2.1-vace-1.3b", target_is_directory=True)
    spec = ShotSpec(prompt="<bob> walking", backend="vace", frames=9, width=32, height=32, steps=2)
    result = generate(spec, bar_depth(), concepts=[bob], weights_root=root, runtime=CPU, out_dir=tmp_path)
    assert result.params["reference_images"] == 3 and "ip_adapter" not in result.params


def test_cli_makes_an_instant_character_in_seconds(root, photos, capsys):
    code = main(["concept", "train", "--name", "fay", "--class-word", "woman", *map(str, photos),
                 "--method", "ip-adapter", "--ip-scale", "0.7", "--weights", str(root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["concept"]["method"] == "ip-adapter" and out["concept"]["ip_scale"] == 0.7
    assert out["losses"] == []
