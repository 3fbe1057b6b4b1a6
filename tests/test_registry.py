"""The registry as the one source of model facts: pins, variants, converted files, derived choices, tiny layouts."""

from __future__ import annotations

import json
import re
import shutil
from typing import get_args

import pytest

from aas_core.registry import BACKEND_BASE_MODEL, BACKEND_MODELS, REGISTRY, UNPINNED, get_spec, names_of_kind
from tests.helpers import ensure_tiny

COMMIT = re.compile(r"^[0-9a-f]{40}\Z")


def test_every_revision_is_a_commit_id_or_a_documented_main():
    assert UNPINNED <= set(REGISTRY)
    for name, spec in REGISTRY.items():
        if name in UNPINNED:
            assert spec.revision == "main", f"{name} is pinned now: take it out of UNPINNED"
        else:
            assert COMMIT.match(spec.revision), f"{name}: revision {spec.revision!r} is not a 40-hex commit id"


def test_choices_are_derived_from_the_registry():
    from aas_core.concepts.inject import CONCEPT_BACKENDS
    from aas_core.depth.estimators import _BUILDERS, ESTIMATORS, EstimatorName
    from aas_core.generate.spec import BACKENDS, Backend

    assert ESTIMATORS == names_of_kind("depth") == get_args(EstimatorName) == tuple(_BUILDERS)
    assert BACKENDS == tuple(BACKEND_MODELS) == get_args(Backend) == CONCEPT_BACKENDS
    for backend, base in BACKEND_BASE_MODEL.items():
        assert base in BACKEND_MODELS[backend] and get_spec(base).kind == "diffusion"


def test_fp16_variants_mirror_the_full_precision_files():
    for name in ("sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15"):
        spec = get_spec(name)
        full, half = spec.files_for(), spec.files_for("fp16")
        assert len(full) == len(half) and half != full
        assert [f.replace(".fp16.", ".") for f in half] == list(full)
    assert get_spec("wan2.1-vace-1.3b").files_for("fp16") == get_spec("wan2.1-vace-1.3b").files


def test_half_precision_runs_load_the_fp16_files(tiny_root, tmp_path):
    """sd15 with only its fp16 variant counts as present and loads (upcast) on a float32 CPU run."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from aas_core.concepts.train import _load_parts
    from aas_core.device import Runtime
    from aas_core.weights import file_variant, status

    ensure_tiny(tiny_root, "sd15")
    folder = tmp_path / "sd15"
    shutil.copytree(tiny_root / "sd15", folder)
    for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        cls.from_pretrained(folder / sub).to(torch.float16).save_pretrained(folder / sub, variant="fp16")
    assert status("sd15", tmp_path).variants == ("", "fp16")
    assert file_variant("sd15", folder, "float16") == "fp16" and file_variant("sd15", folder, "float32") is None
    for full in folder.glob("*/*.safetensors"):
        if ".fp16." not in full.name:
            full.unlink()
    state = status("sd15", tmp_path)
    assert state.present and state.variants == ("fp16",) and file_variant("sd15", folder, "float32") == "fp16"
    parts = _load_parts("sd15", folder, tmp_path, Runtime("cpu", "float32"))
    assert parts.unet.dtype == torch.float32 and parts.text_encoder.dtype == torch.float32


def test_clip_l14_pickle_is_converted_once_to_safetensors(tmp_path):
    """The DataComp ViT-L/14 repo ships open_clip weights only as a pickle: read with weights_only, kept as safetensors."""
    import open_clip
    import torch

    from aas_core.errors import WeightsCorruptError
    from aas_core.tiny.clip import tiny_open_clip_config
    from aas_core.weights import status, to_safetensors

    spec = get_spec("clip-vit-l-14")
    assert "open_clip_pytorch_model.bin" in spec.files and spec.local_files() == ("open_clip_config.json", "open_clip_model.safetensors")
    folder = tmp_path / "clip-vit-l-14"
    folder.mkdir()
    config = tiny_open_clip_config(768)
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    model = open_clip.CLIP(**config["model_cfg"])
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")  # what the hub serves
    assert not status("clip-vit-l-14", tmp_path).present
    to_safetensors(folder / "open_clip_pytorch_model.bin", folder / "open_clip_model.safetensors")
    assert status("clip-vit-l-14", tmp_path).present and not (folder / "open_clip_pytorch_model.bin").exists()
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    torch.testing.assert_close(loaded.state_dict()["text_projection"], model.state_dict()["text_projection"])

    torch.save({"not": "tensors"}, tmp_path / "odd.bin")
    with pytest.raises(WeightsCorruptError, match="not a state dict of tensors"):
        to_safetensors(tmp_path / "odd.bin", tmp_path / "odd.safetensors")


def test_tiny_wan_tokenizer_has_the_real_files_and_extra_ids(tiny_root):
    from transformers import AutoTokenizer

    from aas_core.tiny.diffusion import T5_EXTRA_IDS

    ensure_tiny(tiny_root, "wan2.1-vace-1.3b")
    folder = tiny_root / "wan2.1-vace-1.3b"
    for pattern in get_spec("wan2.1-vace-1.3b").files:
        assert list(folder.glob(pattern)), pattern
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    extra = [t for t in tokenizer.all_special_tokens if t.startswith("<extra_id_")]
    assert len(extra) == T5_EXTRA_IDS == 300
    special = json.loads((folder / "tokenizer" / "special_tokens_map.json").read_text())
    assert len(special["additional_special_tokens"]) == 300
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["vocab_size"] == len(tokenizer)


def test_zoe_stand_in_carries_the_real_extra_keys_and_loads_strictly(tiny_root, tmp_path):
    import torch

    from aas_core.depth.estimators import load_estimator
    from aas_core.device import Runtime
    from aas_core.errors import WeightsCorruptError

    ensure_tiny(tiny_root, "zoedepth")
    path = tiny_root / "zoedepth" / "ZoeD_M12_N.pt"
    state = torch.load(path, weights_only=True)["model"]
    assert sum(k.endswith("relative_position_index") for k in state) == 24  # one per BEiT-L block
    cpu = Runtime("cpu", "float32")
    assert load_estimator("zoedepth", tiny_root, cpu).network is not None
    # A file missing a weight must fail as damaged (ZoeDetector's own strict=False load would accept it).
    (tmp_path / "zoedepth").mkdir()
    del state[next(k for k in state if k.endswith("weight"))]
    torch.save({"model": state}, tmp_path / "zoedepth" / "ZoeD_M12_N.pt")
    with pytest.raises(WeightsCorruptError, match="weights download zoedepth --force"):
        load_estimator("zoedepth", tmp_path, cpu)


def test_leres_is_only_its_depth_network():
    spec = get_spec("leres")
    assert spec.files == ("res101.pth",) and 500 <= spec.size_mb <= 560


def _commands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _commands(sub)
    yield parser


def test_one_weights_flag_name_and_no_cli_defaults_shadowing_the_engines():
    from aas_core.cli import build_parser, given

    parsers = list(_commands(build_parser()))
    flags = {option for p in parsers for a in p._actions for option in a.option_strings}
    assert "--dir" not in flags and "--weights" in flags
    args = build_parser().parse_args(["depth", "clip.mp4"])
    assert args.frames is None and args.estimator is None and args.size is None
    assert given(args, frames="frames", speed="speed") == {}
    args = build_parser().parse_args(["depth", "clip.mp4", "--frames", "8"])
    assert given(args, frames="frames", speed="speed") == {"frames": 8}
