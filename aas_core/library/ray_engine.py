"""The Ray Data indexing engine: read (decode, cut, sample) as CPU tasks -> CLIP as an actor pool -> the same writer.

With no address it starts (or reuses) a local Ray; with one it joins that cluster, so a WebVid-sized folder
on shared storage is indexed by many nodes (an actor per GPU where there are GPUs). The driver is the
writer: each file is stored in one transaction once all of its shots are embedded, as in process.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional

import numpy as np

from aas_core.device import Runtime
from aas_core.errors import InputError
from aas_core.library.indexer import EMBED_BATCH, NO_SHOT, Sink, encode_jpeg, failure_reason, file_info, mean_unit, shot_row
from aas_core.library.reader import FoundFile, ReaderSettings, iter_shots
from aas_core.progress import CancelToken, ProgressFn, report


def read_file(row: dict[str, Any], settings: ReaderSettings, files: list[FoundFile]) -> Iterator[dict[str, Any]]:
    """Reader task: one row per shot (crops as raw bytes, metadata, thumbnail), then one closing row per file."""
    import json

    from aas_core.video_io import probe

    index = int(row["file"])
    found = files[index]
    count = 0
    try:
        info = probe(found.path)
        for shot in iter_shots(found.path, settings, info):
            crops = np.stack(shot.crops)
            yield {"file": index, "kind": "shot", "order": count, "crops": crops.tobytes(), "n": len(crops),
                   "side": crops.shape[1], "meta": json.dumps(shot_row(shot, info)), "jpeg": encode_jpeg(shot.thumbnail)}
            count += 1
        closing = {"kind": "done", "meta": json.dumps(file_info(info))}
    except Exception as exc:  # noqa: BLE001 - any failure is this file's skip, as in process
        closing = {"kind": "error", "meta": json.dumps(failure_reason(exc))}
    yield {"file": index, "order": count, "crops": b"", "n": 0, "side": 0, "jpeg": b"", **closing}


class Embedder:
    """Actor: holds one CLIP model and turns each shot's crops into its unit vector."""

    def __init__(self, model: str, weights_root: Optional[str], device: Optional[str], dtype: Optional[str]) -> None:
        from aas_core.device import pick_runtime
        from aas_core.library.embed import ClipEmbedder

        self.embedder = ClipEmbedder.load(model, weights_root, pick_runtime(device, dtype))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed every shot row of the batch in one call; closing rows pass through with an empty vector."""
        frames, spans = [], []
        for raw, n, side in zip(batch["crops"], batch["n"], batch["side"]):
            n, side = int(n), int(side)
            crops = np.frombuffer(raw, np.uint8).reshape(n, side, side, 3) if n else np.zeros((0, 1, 1, 3), np.uint8)
            spans.append((len(frames), len(frames) + n))
            frames.extend(crops)
        vectors = self.embedder.embed_images(frames, batch_size=EMBED_BATCH) if frames else np.zeros((0, self.embedder.embed_dim), np.float32)
        dim = self.embedder.embed_dim
        out = {k: v for k, v in batch.items() if k not in ("crops", "n", "side")}
        out["vector"] = np.stack([mean_unit(vectors[a:b]) if b > a else np.zeros(dim, np.float32) for a, b in spans])
        return out


def _start_ray(address: Optional[str], workers: int) -> bool:
    """Connect to `address` or start a local Ray; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=max(2, workers + 1), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"could not start or join Ray{f' at {address}' if address else ''} ({exc}); check --ray-address") from exc
    return True


def run_ray(
    todo: list[FoundFile],
    settings: ReaderSettings,
    model: str,
    weights_root: Optional[str | os.PathLike[str]],
    runtime: Optional[Runtime],
    sink: Sink,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> None:
    """Index `todo` on Ray Data into `sink`: one transaction per file as its last shot comes back."""
    import json

    import ray

    workers = workers or 1
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    started = _start_ray(address, workers)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ds = ray.data.from_items([{"file": i} for i in range(len(todo))], override_num_blocks=max(1, len(todo)))
        ds = ds.flat_map(read_file, fn_kwargs={"settings": settings, "files": todo})
        ds = ds.map_batches(
            Embedder,
            compute=ray.data.ActorPoolStrategy(size=workers),
            batch_size=8,
            num_gpus=gpus,
            fn_constructor_kwargs={"model": model, "weights_root": None if weights_root is None else str(weights_root),
                                   "device": runtime.device if runtime else None, "dtype": runtime.dtype_name if runtime else None},
        )
        shots: dict[int, list[tuple[int, dict, np.ndarray, bytes]]] = {}
        closing: dict[int, dict[str, Any]] = {}
        done = 0
        for row in ds.iter_rows():
            if cancel is not None:
                cancel.check()
            index = int(row["file"])
            if row["kind"] == "shot":
                shots.setdefault(index, []).append((int(row["order"]), json.loads(row["meta"]), np.asarray(row["vector"]), bytes(row["jpeg"])))
            else:
                closing[index] = row
            # A file is written once its closing row and every shot it announced have arrived (rows come in any order).
            end = closing.get(index)
            if end is None or len(shots.get(index, [])) < int(end["order"]):
                continue
            found, parts = todo[index], sorted(shots.pop(index, []), key=lambda p: p[0])
            closing.pop(index)
            if end["kind"] == "error":
                sink.file_skipped(found, json.loads(end["meta"]))
            elif not parts:
                sink.file_skipped(found, NO_SHOT)
            else:
                sink.file_done(found, [p[1] for p in parts], np.stack([p[2] for p in parts]), [p[3] for p in parts], json.loads(end["meta"]))
            done += 1
            report(on_progress, done / max(len(todo), 1) * 0.95, f"{done}/{len(todo)} {found.path.name}")
    finally:
        if started:
            ray.shutdown()
