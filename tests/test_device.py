"""Device and dtype are resolved once, with explicit and environment overrides."""

from __future__ import annotations

import pytest
import torch

from aas_core.device import pick_runtime


def test_auto_on_this_machine_matches_torch(monkeypatch):
    monkeypatch.delenv("AAS_DEVICE", raising=False)
    monkeypatch.delenv("AAS_DTYPE", raising=False)
    runtime = pick_runtime()
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert runtime.device == expected
    if expected == "cpu":
        assert runtime.dtype is torch.float32


def test_explicit_and_environment_overrides(monkeypatch):
    assert pick_runtime("cpu", "bfloat16").dtype is torch.bfloat16
    monkeypatch.setenv("AAS_DEVICE", "cpu")
    monkeypatch.setenv("AAS_DTYPE", "float16")
    assert pick_runtime() == pick_runtime("cpu", "float16")
    assert pick_runtime().torch_device == torch.device("cpu")


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="unknown device"):
        pick_runtime("tpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_runtime("cpu", "int8")
