"""The one owner of loaded models: every engine asks here, by key, for what it keeps in memory.

One lock, one table, least-recently-used first out. Before a load whose size is known (or can be read
from the model folder) the table frees the oldest models on the same device until the new one fits
the memory budget. One copy per weights: a model (name, folder, device) is resident in one form
(dtype or variant) at a time, so training and generation never hold SD1.5 twice.

    key = ModelKey("depth-anything-v2-small", str(folder), runtime.device, runtime.dtype_name)
    model = models.get(key, lambda: build(folder))
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar, Union

T = TypeVar("T")

HEADROOM = 0.9
"""Share of free memory the automatic budget may fill: activations and the allocator need the rest."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model: registry name, resolved folder, device, dtype, variant (form)."""

    name: str
    folder: str
    device: str
    dtype: str
    variant: str = ""

    @property
    def weights(self) -> tuple[str, str, str]:
        """The (name, folder, device) whose weights a loaded copy holds."""
        return (self.name, self.folder, self.device)


@dataclass
class _Entry:
    value: Any
    size_bytes: int
    unload: Optional[Callable[[Any], None]]
    loaded_at: float


_LOCK = threading.RLock()
"""Re-entrant: a loader may ask for the parts it is built from (a pipeline over a shared text encoder)."""
_ENTRIES: "OrderedDict[ModelKey, _Entry]" = OrderedDict()
"""Least recently used first."""
_BUDGET: Optional[int] = None
"""Explicit budget in bytes per device; None = from free memory at each load."""


def get(
    key: ModelKey,
    load: Callable[[], T],
    *,
    size_bytes: Optional[int] = None,
    unload: Optional[Callable[[T], None]] = None,
) -> T:
    """The model under `key`, loading it with `load()` (after freeing least-recently-used models over budget)."""
    with _LOCK:
        entry = _ENTRIES.get(key)
        if entry is not None:
            _ENTRIES.move_to_end(key)
            return entry.value
        # 1. one copy per weights: another form of the same model on the same device goes first.
        for other in [k for k in _ENTRIES if k.weights == key.weights]:
            _drop(other)
        # 2. make room for the new model on its device.
        expected = size_bytes if size_bytes is not None else folder_bytes(key.folder)
        _fit(key.device, expected)
        # 3. load; a failed load leaves the table as it was (minus what was freed for it).
        value = load()
        measured = size_bytes if size_bytes is not None else (object_bytes(value) or expected)
        _ENTRIES[key] = _Entry(value, int(measured), unload, time.monotonic())
        return value


def peek(key: ModelKey) -> Any:
    """The model under `key` if it is loaded (marking it used), else None; never loads."""
    with _LOCK:
        entry = _ENTRIES.get(key)
        if entry is None:
            return None
        _ENTRIES.move_to_end(key)
        return entry.value


def release(key_or_name: Union[ModelKey, str]) -> int:
    """Forget one key, or every key of a registry name; returns how many models were released."""
    with _LOCK:
        keys = [k for k in _ENTRIES if k == key_or_name or k.name == key_or_name]
        for key in keys:
            _drop(key)
    if keys:
        free_memory()
    return len(keys)


def release_all(keep: Iterable[str] = ()) -> int:
    """Forget every model whose registry name is not in `keep`; returns how many were released."""
    kept = set(keep)
    with _LOCK:
        keys = [k for k in _ENTRIES if k.name not in kept]
        for key in keys:
            _drop(key)
    if keys:
        free_memory()
    return len(keys)


def loaded() -> list[ModelKey]:
    """Keys of the loaded models, least recently used first."""
    with _LOCK:
        return list(_ENTRIES)


def sizes() -> dict[ModelKey, int]:
    """Bytes each loaded model is counted for (what the budget adds up)."""
    with _LOCK:
        return {k: e.size_bytes for k, e in _ENTRIES.items()}


def set_budget(budget: Optional[int]) -> None:
    """Cap the bytes of models kept per device; None = the automatic budget (free VRAM on CUDA, available RAM)."""
    global _BUDGET
    if budget is not None and budget < 0:
        raise ValueError(f"a memory budget is a number of bytes >= 0, got {budget}")
    with _LOCK:
        _BUDGET = None if budget is None else int(budget)


def budget(device: str) -> int:
    """Bytes the models on `device` may use now: the explicit budget, else what they hold plus free memory."""
    with _LOCK:
        if _BUDGET is not None:
            return _BUDGET
        held = sum(e.size_bytes for k, e in _ENTRIES.items() if _same_pool(k.device, device))
    return held + int(free_bytes(device) * HEADROOM)


def free_bytes(device: str) -> int:
    """Free memory where models on `device` live: CUDA free VRAM, otherwise available system RAM."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return available_ram()


def available_ram() -> int:
    """Available system RAM in bytes (Linux MemAvailable; elsewhere physical pages as an upper bound)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # Windows has no sysconf
        return 1 << 62  # unknown: never evict on a guess


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of the weight files under a model folder (0 when it is not a folder): a load's expected size."""
    path = Path(folder)
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def object_bytes(value: Any, _seen: Optional[set[int]] = None) -> int:
    """Bytes of the torch parameters and buffers a loaded object holds (modules, pipelines, dataclasses)."""
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    try:
        import torch
    except ImportError:  # nothing torch-backed was ever loaded
        return 0
    if isinstance(value, torch.nn.Module):
        tensors = {id(t): t for t in [*value.parameters(), *value.buffers()]}
        return sum(t.numel() * t.element_size() for t in tensors.values())
    if isinstance(value, dict):
        return sum(object_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(object_bytes(v, seen) for v in value)
    components = getattr(value, "components", None)  # diffusers pipelines
    if isinstance(components, dict):
        return object_bytes(components, seen)
    fields = getattr(value, "__dict__", None)
    if isinstance(fields, dict):
        return sum(object_bytes(v, seen) for v in fields.values() if isinstance(v, (torch.nn.Module, dict, list, tuple)) or hasattr(v, "components"))
    return 0


def free_memory() -> None:
    """Collect dropped models now and hand cached CUDA blocks back to the driver."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _same_pool(a: str, b: str) -> bool:
    """Whether two devices share memory (all non-CUDA devices count as system RAM)."""
    return a == b or (not a.startswith("cuda") and not b.startswith("cuda"))


def _drop(key: ModelKey) -> None:
    """Remove one entry (lock held), running its unload hook; a failing hook must not keep the model."""
    entry = _ENTRIES.pop(key)
    if entry.unload is not None:
        try:
            entry.unload(entry.value)
        except Exception as exc:  # noqa: BLE001 - unload hooks run third-party cleanup; the entry is gone either way
            import warnings

            warnings.warn(f"unloading {key.name} raised {type(exc).__name__}: {exc}", stacklevel=3)


def _fit(device: str, size: int) -> None:
    """Free least-recently-used models on `device`'s memory until `size` more bytes fit the budget (lock held)."""
    if size <= 0:
        return
    while True:
        pool = [k for k in _ENTRIES if _same_pool(k.device, device)]
        held = sum(_ENTRIES[k].size_bytes for k in pool)
        if not pool or held + size <= budget(device):
            return
        _drop(pool[0])
        free_memory()
