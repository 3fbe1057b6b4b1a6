"""Registry, weights folder, tiny writers and the `weights` CLI."""

from __future__ import annotations

import json

import pytest

from aas_core import weights
from aas_core.cli import main
from aas_core.errors import WeightsMissingError
from aas_core.registry import REGISTRY, get_spec
from tests.helpers import ensure_tiny


def test_every_registry_entry_is_complete():
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert "/" in spec.hub_id and spec.files and spec.license and spec.size_mb > 0
        assert ":" in spec.tiny_writer


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="clip-vit-b-32"):
        get_spec("nope")


def test_missing_model_names_the_download_command(tmp_path):
    with pytest.raises(WeightsMissingError, match="python -m aas_core weights download clip-vit-b-32"):
        weights.model_dir("clip-vit-b-32", tmp_path)


def test_tiny_clip_loads_through_the_real_loader(tiny_root):
    import open_clip

    ensure_tiny(tiny_root, "clip-vit-b-32")
    folder = weights.model_dir("clip-vit-b-32", tiny_root)
    assert weights.is_tiny("clip-vit-b-32", tiny_root)
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(["a dog"])
    assert model.encode_text(tokens).shape == (1, get_spec("clip-vit-b-32").options["embed_dim"])


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError, match="copy the files"):
        weights.download(["clip-vit-b-32"], tmp_path)
    assert not (tmp_path / "clip-vit-b-32" / "open_clip_model.safetensors").exists()


def test_cli_list_and_tiny_json(tmp_path, capsys):
    assert main(["weights", "tiny", "clip-vit-b-32", "--weights", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["written"] == [str(tmp_path / "clip-vit-b-32")]
    assert main(["weights", "list", "--weights", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["clip-vit-b-32"]["tiny"] and rows["clip-vit-b-32"]["present"]
    assert not rows["clip-vit-l-14"]["present"]


def test_cli_error_is_json_and_exit_2(tmp_path, capsys):
    assert main(["weights", "download", "no-such-model", "--weights", str(tmp_path), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert not out["ok"] and "unknown model" in out["error"]


def test_load_errors_say_re_download_only_for_damaged_files(tmp_path):
    import json

    from aas_core.errors import ModelLoadError, WeightsCorruptError
    from aas_core.weights import load_error, load_error_kind

    damaged = [
        RuntimeError("Error while deserializing header: HeaderTooLarge"),
        RuntimeError("Error(s) in loading state_dict for UNet: size mismatch for conv_in.weight"),
        ValueError("Cannot load because the following keys are missing: down.0.weight"),
        json.JSONDecodeError("Expecting value", "", 0),
        EOFError("Ran out of input"),
    ]
    device = [
        RuntimeError("CUDA error: no kernel image is available for execution on the device"),
        RuntimeError("Torch not compiled with CUDA enabled"),
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_INITIALIZED"),
    ]
    config = [TypeError("__init__() got an unexpected keyword argument 'use_foo'"), KeyError("model_type")]
    assert [load_error_kind(e) for e in damaged] == ["damaged"] * len(damaged)
    assert [load_error_kind(e) for e in device] == ["device"] * len(device)
    assert [load_error_kind(e) for e in config] == ["config"] * len(config)
    err = load_error("sd15", tmp_path, damaged[0])
    assert isinstance(err, WeightsCorruptError) and "weights download sd15 --force" in str(err)
    for exc in device + config:
        err = load_error(["sd15", "controlnet-depth-sd15"], tmp_path, exc)
        assert isinstance(err, ModelLoadError) and "download" not in str(err)
    assert "--device cpu" in str(load_error("sd15", tmp_path, device[0]))
    assert "requirements.txt" in str(load_error("sd15", tmp_path, config[0]))
