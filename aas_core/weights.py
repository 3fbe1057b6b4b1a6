"""The weights folder: download from the Hub, locate offline, write tiny random stand-ins."""

from __future__ import annotations

import importlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from aas_core.errors import WeightsCorruptError, WeightsMissingError
from aas_core.fsutil import atomic_dir, atomic_write_json
from aas_core.registry import REGISTRY, ModelSpec, get_spec

TINY_MARKER = "aas_tiny.json"
"""File written beside tiny random weights so the product can label results as a workflow preview."""


def weights_dir(override: Optional[str | os.PathLike[str]] = None) -> Path:
    """The weights folder: `override`, else $AAS_WEIGHTS_DIR, else ./weights."""
    return Path(override or os.environ.get("AAS_WEIGHTS_DIR") or "weights").expanduser().absolute()


def _missing_patterns(spec: ModelSpec, folder: Path, variant: Optional[str] = None) -> list[str]:
    return [pattern for pattern in spec.local_files(variant) if not any(folder.glob(pattern))]


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a model is present in a weights folder."""

    name: str
    path: str
    present: bool
    tiny: bool
    missing: tuple[str, ...]
    variants: tuple[str, ...] = ()
    """Complete file sets present: "" (full precision) and/or variant names such as "fp16"."""


def status(name: str, root: Optional[str | os.PathLike[str]] = None) -> WeightsStatus:
    """Report whether `name` is fully present (in full precision or any variant) under the weights folder."""
    spec = get_spec(name)
    folder = weights_dir(root) / spec.name
    missing = tuple(_missing_patterns(spec, folder)) if folder.is_dir() else spec.local_files()
    complete = _complete_sets(spec, folder)
    return WeightsStatus(
        name=spec.name,
        path=str(folder),
        present=bool(complete),
        tiny=(folder / TINY_MARKER).is_file(),
        missing=() if complete else missing,
        variants=complete,
    )


def _complete_sets(spec: ModelSpec, folder: Path) -> tuple[str, ...]:
    """"" (full precision) and the variant names whose files are all in `folder`."""
    if not folder.is_dir():
        return ()
    return tuple(v for v in ("", *spec.variants) if not _missing_patterns(spec, folder, v or None))


def file_variant(name: str, folder: str | os.PathLike[str], dtype_name: str) -> Optional[str]:
    """The file variant to load from a model folder for a run in `dtype_name`: "fp16" files on half-precision
    runs (or when they are all there is; diffusers upcasts them), None for the full-precision files."""
    present = _complete_sets(get_spec(name), Path(folder))
    half = dtype_name in ("float16", "bfloat16")
    if "fp16" in present and (half or "" not in present):
        return "fp16"
    return None


def model_dir(name: str, root: Optional[str | os.PathLike[str]] = None) -> Path:
    """The local folder of `name` (symlinks resolved), or a WeightsMissingError naming the command that fetches it."""
    state = status(name, root)
    if not state.present:
        raise WeightsMissingError(
            f"model {name!r} is not in {weights_dir(root)} (missing {', '.join(state.missing)}). "
            f"Fetch it with: python -m aas_core weights download {name}"
            + ("" if root is None else f" --weights {root}")
            + "  (or try the workflow without downloads: python -m aas_core weights tiny --weights DIR)"
        )
    # Resolved, so model caches keyed by this folder share one copy across linked weights folders.
    return Path(state.path).resolve()


def is_tiny(name: str, root: Optional[str | os.PathLike[str]] = None) -> bool:
    """Whether the local copy of `name` is a tiny random-weight stand-in."""
    return status(name, root).tiny


def download(
    names: Iterable[str], root: Optional[str | os.PathLike[str]] = None, force: bool = False, variant: Optional[str] = None
) -> list[Path]:
    """Fetch models from the Hugging Face Hub into the weights folder (tqdm progress on stderr).

    `variant="fp16"` fetches the half-size files where a repo has them (for half-precision GPUs).
    """
    from huggingface_hub import snapshot_download

    fetched = []
    for name in names:
        spec = get_spec(name)
        folder = weights_dir(root) / spec.name
        wanted = variant if variant in spec.variants else ""
        if not force and wanted in status(name, root).variants and not is_tiny(name, root):
            fetched.append(folder)
            continue
        if is_tiny(name, root):
            # Never mix real files into a tiny folder: the marker would mislabel real results.
            shutil.rmtree(folder)
        try:
            snapshot_download(
                repo_id=spec.hub_id,
                revision=spec.revision,
                allow_patterns=list(spec.files_for(wanted or None)),
                local_dir=str(folder),
            )
        except Exception as exc:  # the hub client raises many types (network, auth, 404)
            raise WeightsMissingError(
                f"could not fetch {name} ({spec.hub_id}) from the Hugging Face Hub: {exc}. "
                f"Check the network (or HF_ENDPOINT / HF_TOKEN), or copy the files {', '.join(spec.files_for(wanted or None))} "
                f"into {folder} by hand"
            ) from exc
        for source, target in spec.converted.items():
            if (folder / source).is_file():
                to_safetensors(folder / source, folder / target)
        missing = _missing_patterns(spec, folder, wanted or None)
        if missing:
            raise WeightsMissingError(
                f"downloaded {spec.hub_id} but {', '.join(missing)} did not arrive; "
                "the repository layout may have changed: check the registry entry"
            )
        fetched.append(folder)
    return fetched


def to_safetensors(source: Path, target: Path) -> Path:
    """Rewrite a pickled state dict as safetensors (read with weights_only=True, tensors only) and delete the pickle."""
    import torch
    from safetensors.torch import save_file

    from aas_core.fsutil import atomic_path

    state = torch.load(str(source), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsCorruptError(f"{source} is not a state dict of tensors; fetch it again with --force")
    # clone(): tied tensors share storage, which safetensors refuses to write twice.
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(tmp))
    source.unlink()
    return target


def write_tiny(names: Iterable[str], root: str | os.PathLike[str], overwrite: bool = True) -> list[Path]:
    """Write tiny random-weight copies of `names` under `root`, each in its real layout."""
    written = []
    for name in names:
        spec = get_spec(name)
        module_name, func_name = spec.tiny_writer.split(":")
        writer = getattr(importlib.import_module(module_name), func_name)
        target = Path(root) / spec.name
        if target.exists() and not overwrite:
            written.append(target)
            continue
        with atomic_dir(target, overwrite=True) as tmp:
            writer(tmp, spec)
            atomic_write_json(tmp / TINY_MARKER, {"name": spec.name, "hub_id": spec.hub_id, "tiny": True})
        written.append(target)
    return written


def list_all(root: Optional[str | os.PathLike[str]] = None) -> list[dict]:
    """Every registry entry with its local status, for `weights list` and the UI."""
    rows = []
    for name, spec in REGISTRY.items():
        state = status(name, root)
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "hub_id": spec.hub_id,
                "license": spec.license,
                "size_mb": spec.size_mb,
                "present": state.present,
                "variants": list(state.variants),
                "revision": spec.revision,
                "tiny": state.tiny,
                "path": state.path,
                "loader": spec.loader,
            }
        )
    return rows


_DAMAGED_SIGNS = (
    "header", "safetensor", "missing key", "keys are missing", "unexpected key(s)", "unexpected keys", "size mismatch", "mismatched sizes", "state_dict",
    "incomplete", "unexpected eof", "end of file", "central directory", "pytorchstreamreader", "truncated",
    "no such file", "does not appear to have a file", "expecting value", "invalid load key", "could not find",
)
_DEVICE_SIGNS = re.compile(r"\b(cuda|cudnn|cublas|nccl|mps|hip|no kernel image|device-side|not compiled with|driver)\b")


def load_error_kind(exc: BaseException) -> str:
    """Why a model failed to load: `damaged` files, a `device` problem, or a `config`/library mismatch."""
    import json

    text = f"{type(exc).__name__}: {exc}".lower()
    if _DEVICE_SIGNS.search(text) and not isinstance(exc, (FileNotFoundError, json.JSONDecodeError)):
        return "device"
    if isinstance(exc, (EOFError, FileNotFoundError, json.JSONDecodeError)) or any(sign in text for sign in _DAMAGED_SIGNS):
        return "damaged"
    return "config"


def load_error(names: str | Iterable[str], folder: str | os.PathLike[str], exc: BaseException) -> Exception:
    """The error to raise when models fail to load from `folder`: only damaged files are told to re-download."""
    from aas_core.errors import ModelLoadError, WeightsCorruptError

    name = names if isinstance(names, str) else " ".join(names)
    kind = load_error_kind(exc)
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    if kind == "damaged":
        return WeightsCorruptError(
            f"the {name} files in {folder} are damaged or incomplete ({detail}); "
            f"fetch them again with: python -m aas_core weights download {name} --force"
        )
    if kind == "device":
        return ModelLoadError(
            f"{name} loaded from disk but could not be placed on the device ({detail}); the files are fine: "
            "check the GPU driver and that torch was built for it, or run on the CPU with --device cpu"
        )
    return ModelLoadError(
        f"{name} in {folder} does not match what the installed libraries expect ({detail}); the files are not "
        "the problem: install the versions pinned in requirements.txt (pip install -r requirements.txt)"
    )
