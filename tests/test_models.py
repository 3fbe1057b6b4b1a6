"""aas_core.models: the one owner of loaded models (keys, LRU budget, one copy per weights, thread safety)."""

from __future__ import annotations

import threading
import time

import pytest

from aas_core import models
from aas_core.models import ModelKey


@pytest.fixture(autouse=True)
def clean_table():
    models.release_all()
    models.set_budget(None)
    yield
    models.release_all()
    models.set_budget(None)


def key(name: str, device: str = "cpu", dtype: str = "float32", variant: str = "", folder: str = "/w") -> ModelKey:
    return ModelKey(name, f"{folder}/{name}", device, dtype, variant)


def test_loads_once_per_key_and_reuses():
    calls = []

    def load():
        calls.append(1)
        return object()

    first = models.get(key("a"), load, size_bytes=10)
    assert models.get(key("a"), load, size_bytes=10) is first and len(calls) == 1
    assert models.loaded() == [key("a")]
    # A different device or folder is a different model.
    assert models.get(key("a", device="meta"), load, size_bytes=10) is not first
    assert models.get(key("a", folder="/other"), load, size_bytes=10) is not first
    assert len(calls) == 3 and len(models.loaded()) == 3


def test_least_recently_used_goes_first_when_over_budget():
    unloaded = []
    models.set_budget(100)
    for name in ("a", "b", "c"):
        models.get(key(name), lambda name=name: name, size_bytes=30, unload=unloaded.append)
    models.get(key("a"), lambda: "never")  # touch a: b is now the oldest
    models.get(key("d"), lambda: "d", size_bytes=40, unload=unloaded.append)
    assert unloaded == ["b"] and [k.name for k in models.loaded()] == ["c", "a", "d"]
    # Something bigger than the whole budget empties the pool, then loads anyway.
    models.get(key("e"), lambda: "e", size_bytes=500)
    assert [k.name for k in models.loaded()] == ["e"] and unloaded == ["b", "c", "a", "d"]


def test_budget_counts_each_memory_pool_apart():
    models.set_budget(100)
    models.get(key("gpu_model", device="cuda"), lambda: 1, size_bytes=90)
    models.get(key("cpu_model"), lambda: 2, size_bytes=90)
    assert {k.name for k in models.loaded()} == {"gpu_model", "cpu_model"}


def test_another_form_of_the_same_weights_replaces_the_first():
    models.get(key("sd15", variant="timeinv"), lambda: "parts", size_bytes=1)
    models.get(key("sd15", variant="animatediff:full"), lambda: "pipeline", size_bytes=1)
    assert models.loaded() == [key("sd15", variant="animatediff:full")]
    models.get(key("sd15", dtype="float16", variant="animatediff:full"), lambda: "half", size_bytes=1)
    assert models.loaded() == [key("sd15", dtype="float16", variant="animatediff:full")]


def test_release_by_key_by_name_and_all_but_kept():
    for name in ("clip", "depth", "sd15"):
        models.get(key(name), lambda name=name: name, size_bytes=1)
    models.get(key("depth", device="meta"), lambda: "depth2", size_bytes=1)
    assert models.release(key("clip")) == 1
    assert models.release("depth") == 2
    assert models.release("nothing") == 0
    models.get(key("clip"), lambda: "clip", size_bytes=1)
    assert models.release_all(keep=["sd15"]) == 1 and models.loaded() == [key("sd15")]
    assert models.release_all() == 1 and models.loaded() == []


def test_failed_load_leaves_no_entry_and_failing_unload_still_releases():
    def boom():
        raise RuntimeError("bad header")

    with pytest.raises(RuntimeError, match="bad header"):
        models.get(key("a"), boom)
    assert models.loaded() == []

    def bad_unload(value):
        raise ValueError("cleanup failed")

    models.get(key("b"), lambda: 1, size_bytes=1, unload=bad_unload)
    with pytest.warns(UserWarning, match="cleanup failed"):
        assert models.release("b") == 1
    assert models.loaded() == []


def test_size_is_measured_from_torch_modules_and_read_from_the_folder(tmp_path):
    import torch

    module = torch.nn.Linear(10, 10)  # 110 float32 parameters
    models.get(key("lin"), lambda: module)
    assert models.sizes()[key("lin")] == 110 * 4
    holder = {"a": module, "b": [module, torch.nn.Linear(1, 1, bias=False)]}
    assert models.object_bytes(holder) == 110 * 4 + 4  # shared module counted once
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "config.json").write_text("{}")
    assert models.folder_bytes(tmp_path) == 1000 and models.folder_bytes(tmp_path / "missing") == 0


def test_automatic_budget_follows_free_memory():
    assert models.free_bytes("cpu") > 0 and models.budget("cpu") > 1 << 20
    models.get(key("small"), lambda: 1, size_bytes=1)
    models.get(key("fits"), lambda: 2, size_bytes=1 << 20)
    assert len(models.loaded()) == 2
    # More than this machine has free: everything older on the pool is freed first.
    models.get(key("huge"), lambda: 3, size_bytes=1 << 60)
    assert models.loaded() == [key("huge")]
    with pytest.raises(ValueError, match="bytes >= 0"):
        models.set_budget(-1)


def test_one_lock_one_load_under_concurrent_requests():
    calls = []

    def slow_load():
        calls.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(models.get(key("a"), slow_load, size_bytes=1))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(r is results[0] for r in results)


def test_a_loader_may_ask_for_its_parts():
    def pipeline():
        return ("pipe", models.get(key("text-encoder"), lambda: "te", size_bytes=1))

    assert models.get(key("pipe"), pipeline, size_bytes=1) == ("pipe", "te")
    assert [k.name for k in models.loaded()] == ["text-encoder", "pipe"]


def test_depth_then_training_then_generation_keep_one_copy_of_sd15(tiny_root, tmp_path):
    """The app's path: depth for a shot, train a character, generate: SD1.5 is resident once, not twice."""
    from PIL import Image

    from aas_core.concepts import train_concept
    from aas_core.concepts.train import TrainSettings
    from aas_core.depth import depth_from_clip
    from aas_core.device import Runtime
    from aas_core.generate import ShotSpec, generate
    from tests.helpers import ensure_tiny, moving_square_frames, write_clip

    cpu = Runtime(device="cpu", dtype_name="float32")
    names = ("depth-anything-v2-small", "sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15")
    ensure_tiny(tiny_root, *names)
    root = tmp_path / "weights"
    root.mkdir()
    for name in names:
        (root / name).symlink_to(tiny_root / name, target_is_directory=True)
    clip = write_clip(tmp_path / "clip.mp4", moving_square_frames(frames=8, size=(64, 64)))
    photos = []
    for i in range(3):
        photos.append(tmp_path / f"p{i}.png")
        Image.fromarray(moving_square_frames(frames=3, size=(64, 64))[i]).save(photos[-1])

    depth = depth_from_clip(clip, frames=4, size=(64, 64), weights_root=root, runtime=cpu, use_cache=False)
    settings = TrainSettings(steps=1, buckets=2, vectors=1, batch_size=1, views_per_photo=1, validate_every=0, checkpoint_every=0)
    train_concept("alice", "square", photos, settings, root=root, runtime=cpu)
    assert [k.variant for k in models.loaded() if k.name == "sd15"] == ["timeinv"]
    spec = ShotSpec(prompt="a red square", frames=4, width=64, height=64, steps=1, seed=0)
    generate(spec, depth, weights_root=root, runtime=cpu, out_dir=tmp_path / "shots")

    sd15 = [k for k in models.loaded() if k.name == "sd15"]
    assert len(sd15) == 1 and sd15[0].variant.startswith("pipeline:animatediff:")
    assert {k.name for k in models.loaded()} == {"depth-anything-v2-small", "sd15"}
    # Training again takes SD1.5 back from the pipeline instead of loading a second copy beside it.
    from aas_core.concepts.train import load_parts

    load_parts("sd15", root, cpu)
    assert [k.variant for k in models.loaded() if k.name == "sd15"] == ["timeinv"]
