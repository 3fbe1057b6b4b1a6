"""Ray Data engine: the same library, shot by shot, as the in-process engine (small and time-bounded)."""

from __future__ import annotations

import numpy as np
import pytest

from aas_core.library import index_folder, list_shots
from aas_core.library.store import LibraryStore
from tests.helpers import ensure_tiny, moving_square_frames, write_clip

ray = pytest.importorskip("ray")


def _vectors(lib, shots):
    db = LibraryStore(lib).open_live()
    try:
        found, vectors = db.vectors_of(np.array([s["id"] for s in shots]))
        assert found.all()
        return vectors
    finally:
        db.close()


def test_ray_engine_matches_in_process_shot_by_shot(tmp_path, tiny_root):
    weights = ensure_tiny(tiny_root, "clip-vit-b-32")
    folder = tmp_path / "clips"
    folder.mkdir()
    cuts = np.concatenate([moving_square_frames("red", "right", frames=12, background=(200, 40, 40)),
                           moving_square_frames("blue", "down", frames=12, background=(20, 160, 60))])
    write_clip(folder / "cuts.mp4", cuts, fps=8)
    write_clip(folder / "plain.mp4", moving_square_frames("yellow", "left", frames=20), fps=8)
    (folder / "broken.mp4").write_bytes(b"\x00" * 4000)
    local = index_folder(folder, tmp_path / "local", weights_root=weights)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = index_folder(folder, tmp_path / "ray", weights_root=weights, engine="ray", workers=1)
    finally:
        ray.shutdown()
    assert (remote.shots, remote.engine) == (local.shots, "ray") and local.shots >= 3
    assert remote.skipped == local.skipped and [s["path"].split("/")[-1] for s in remote.skipped] == ["broken.mp4"]
    a, b = list_shots(tmp_path / "local"), list_shots(tmp_path / "ray")
    keys = ("path", "start", "end", "fps", "width", "height", "frames_sampled", "motion", "camera_motion", "subject_motion")
    order = lambda shots: sorted(shots, key=lambda s: (s["path"], s["start"]))  # noqa: E731
    a, b = order(a), order(b)
    assert [tuple(s[k] for k in keys) for s in a] == [tuple(s[k] for k in keys) for s in b]
    cosine = np.sum(_vectors(tmp_path / "local", a) * _vectors(tmp_path / "ray", b), axis=1)
    assert cosine.min() > 0.999, cosine
