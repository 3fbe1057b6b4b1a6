"""Standard formats in and out: plain textual-inversion embeddings and SD1.5 LoRA files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from aas_core.concepts.store import Concept, Root, check_free, check_name, holding_concept_lock, write_concept
from aas_core.concepts.timeinv import token_for
from aas_core.errors import InputError
from aas_core.fsutil import atomic_path
from aas_core.limits import MAX_TI_VECTORS

if TYPE_CHECKING:
    import torch

TOKEN_EMBEDDING_SUFFIX = "embeddings.token_embedding.weight"
"""Hub SD1.5 files name it `text_model.embeddings...`; transformers 5 saves it without the prefix."""
MAX_TI_FILE_BYTES = 10 * 2**20
"""A textual-inversion file holds a few vectors (16 x 1024 floats is 64 KB); anything this big is something else."""


def export_textual_inversion(concept: Concept, out: str | os.PathLike[str]) -> Path:
    """Write the concept's mean-over-buckets vectors as a one-key `{token: (n, D)}` safetensors file.

    diffusers' `load_textual_inversion` and A1111/ComfyUI embeddings folders read this layout.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"export to a .safetensors file (got {out.name})")
    mean = concept.table().mean(dim=0).contiguous()
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file({concept.token: mean}, str(tmp), metadata={"base_model": concept.base_model, "source": "aas-timeinv-mean"})
    return out


def _read_tensors(path: Path) -> dict:
    """Tensors of a safetensors file, or of a .pt/.bin read with `weights_only=True` (never unpickled code)."""
    import torch

    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file")
    if path.stat().st_size > MAX_TI_FILE_BYTES:
        raise InputError(
            f"{path.name} is {path.stat().st_size / 2**20:.0f} MB; a textual-inversion file is a few KB "
            f"(at most {MAX_TI_FILE_BYTES // 2**20} MB): is it a model or a LoRA? (import LoRAs with concept import-lora)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix in (".pt", ".bin"):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types for damaged files
        raise InputError(f"{path.name} could not be read as an embedding file ({exc}); is it damaged?") from exc
    raise InputError(f"{path.name}: use a .safetensors (or .pt / .bin) textual-inversion file")


def embedding_from_file(path: str | os.PathLike[str]) -> "torch.Tensor":
    """The (n, D) vectors of a diffusers ({token: t}), A1111 (string_to_param / emb_params) TI file."""
    import torch

    data = _read_tensors(Path(path))
    if not isinstance(data, dict) or not data:
        raise InputError(f"{Path(path).name} holds no embedding")
    if "clip_l" in data or "clip_g" in data:
        raise InputError(f"{Path(path).name} is an SDXL embedding (clip_l/clip_g); use an SD1.5 embedding")
    if "string_to_param" in data:
        params = data["string_to_param"]
        tensor = next(iter(params.values())) if isinstance(params, dict) and params else None
    elif "emb_params" in data:
        tensor = data["emb_params"]
    elif len(data) == 1:
        tensor = next(iter(data.values()))
    else:
        raise InputError(f"{Path(path).name} has {len(data)} tensors; a textual-inversion file holds one embedding")
    if not torch.is_tensor(tensor):
        raise InputError(f"{Path(path).name} holds no embedding tensor")
    tensor = tensor.detach().float()
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2:
        raise InputError(f"{Path(path).name}: embedding of shape {tuple(tensor.shape)}, expected (vectors, width)")
    if tensor.shape[0] > MAX_TI_VECTORS:
        raise InputError(
            f"{Path(path).name} has {tensor.shape[0]:,} vectors per token; at most {MAX_TI_VECTORS} are allowed "
            "(public embeddings use 1-8, and each vector takes one of the prompt's 75 token places)"
        )
    _check_finite({"embedding": tensor}, Path(path).name)
    return tensor


def _check_finite(tensors: dict, source: str) -> None:
    """Refuse NaN/Inf at import: they would silently turn every generated frame black."""
    import torch

    for key, value in tensors.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(f"{source}: tensor {key} holds NaN or infinite values; the file is damaged (or its training diverged): use another file")


def _base_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Weight shapes of a model folder's safetensors files (headers only; nothing is loaded)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                shapes.setdefault(key.removeprefix("text_model."), tuple(fh.get_slice(key).get_shape()))
    return shapes


def _lora_pairs(state: dict) -> dict[str, dict[str, dict]]:
    """LoRA tensors per part (unet, text_encoder) and module, in PEFT naming (as diffusers converts them when loading)."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    parts: dict[str, dict[str, dict]] = {}
    for part in ("unet", "text_encoder"):
        sub = {k.removeprefix(f"{part}."): v for k, v in state.items() if k.startswith(f"{part}.")}
        if not sub:
            continue
        if part == "unet":
            sub = sub if any("lora_A" in k for k in sub) else convert_unet_state_dict_to_peft(sub)
        else:
            sub = convert_state_dict_to_peft(convert_state_dict_to_diffusers(sub))
        modules: dict[str, dict] = {}
        for key, value in sub.items():
            for role in ("lora_A", "lora_B"):
                if f".{role}." in key:
                    module = key.split(f".{role}.")[0].removeprefix("text_model.")
                    modules.setdefault(module, {})[role] = value
        parts[part] = modules
    return parts


def _check_lora_shapes(state: dict, base_folder: Path, source: str, base_model: str) -> None:
    """Every LoRA pair must target a layer of the base model with its sizes, and agree on its rank."""
    for part, modules in _lora_pairs(state).items():
        shapes = _base_shapes(base_folder / part)
        for module, pair in modules.items():
            down, up = pair.get("lora_A"), pair.get("lora_B")
            if down is None or up is None:
                raise InputError(f"{source}: layer {part}.{module} has only half of its LoRA pair (lora_A and lora_B); the file is damaged")
            base = shapes.get(f"{module}.weight")
            if base is None:
                raise InputError(f"{source}: targets layer {part}.{module}, which {base_model} does not have; it was made for another model")
            if down.shape[0] != up.shape[1]:
                raise InputError(
                    f"{source}: layer {part}.{module} has rank {down.shape[0]} in lora_A but {up.shape[1]} in lora_B; the file is damaged"
                )
            if down.ndim != len(base) or down.shape[1] != base[1] or up.shape[0] != base[0]:
                raise InputError(
                    f"{source}: layer {part}.{module} is {base[0]}x{base[1]} in {base_model} but the LoRA gives "
                    f"{up.shape[0]}x{down.shape[1]} (rank {down.shape[0]}); it was made for another model (SDXL, SD2 or another size)"
                )


def _base_facts(base_model: str, root: Root) -> tuple[Path, dict, dict]:
    from aas_core.weights import model_dir

    folder = model_dir(base_model, root)
    text = json.loads((folder / "text_encoder" / "config.json").read_text())
    unet = json.loads((folder / "unet" / "config.json").read_text())
    return folder, text, unet


def _new_concept(name: str, class_word: str, base_model: str, root: Root, source: str, scheduler_folder: Path) -> Concept:
    from aas_core.registry import get_spec
    from aas_core.weights import is_tiny

    steps = json.loads((scheduler_folder / "scheduler_config.json").read_text()).get("num_train_timesteps", 1000)
    return Concept(
        name=name, class_word=class_word, buckets=1, vectors=1, dim=1, base_model=base_model,
        base_hub_id=get_spec(base_model).hub_id, num_train_timesteps=int(steps), source=source,  # type: ignore[arg-type]
        tiny=is_tiny(base_model, root),
    )


@holding_concept_lock
def import_textual_inversion(
    path: str | os.PathLike[str], name: str, class_word: str = "", base_model: str = "sd15",
    root: Root = None, overwrite: bool = False,
) -> Concept:
    """Make a concept (one bucket) from a standard textual-inversion file."""
    check_name(name)
    check_free(name, root, overwrite)
    vectors = embedding_from_file(path)
    folder, text, _ = _base_facts(base_model, root)
    if vectors.shape[1] != int(text["hidden_size"]):
        raise InputError(
            f"{Path(path).name} has {vectors.shape[1]}-wide vectors but {base_model}'s text encoder is {text['hidden_size']} wide: "
            "it was made for another base model (SD2 embeddings are 1024 wide)"
        )
    concept = _new_concept(name, class_word, base_model, root, "imported-ti", folder / "scheduler")
    concept.settings = {"imported_from": Path(path).name}
    return write_concept(concept, vectors[None], root, overwrite=overwrite)


@holding_concept_lock
def import_lora(
    path: str | os.PathLike[str], name: str, trigger: str = "", class_word: str = "", base_model: str = "sd15",
    root: Root = None, overwrite: bool = False,
) -> Concept:
    """Make a concept from an SD1.5 LoRA file: `<name>` stands for its trigger words and loads the LoRA."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    check_name(name)
    check_free(name, root, overwrite)
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise InputError(f"{path}: give an existing .safetensors LoRA file")
    words = (trigger or class_word).strip()
    if not words:
        raise InputError("give the LoRA's trigger words (--trigger) or a class word: <name> will stand for them")
    folder, text, unet = _base_facts(base_model, root)
    try:
        state, _ = StableDiffusionPipeline.lora_state_dict(str(path))
    except Exception as exc:  # diffusers raises ValueError/KeyError/... for unknown layouts
        raise InputError(f"{path.name} is not a LoRA diffusers can read ({exc})") from exc
    if not state or not all(k.startswith(("unet.", "text_encoder.")) for k in state):
        raise InputError(f"{path.name} does not look like an SD1.5 LoRA (keys such as {next(iter(state), '')!r})")
    cross = [v for k, v in state.items() if "attn2.to_k" in k and ("lora_A" in k or "lora.down" in k)]
    if cross and cross[0].shape[1] != int(unet["cross_attention_dim"]):
        raise InputError(
            f"{path.name} was trained for a model with {cross[0].shape[1]}-wide text features, not {base_model} "
            f"({unet['cross_attention_dim']}): an SDXL or SD2 LoRA cannot be used here"
        )
    _check_finite(state, path.name)
    _check_lora_shapes(state, folder, path.name, base_model)
    from transformers import CLIPTokenizer

    ids = CLIPTokenizer.from_pretrained(folder / "tokenizer")(words, add_special_tokens=False).input_ids
    with safe_open(str(folder / "text_encoder" / "model.safetensors"), framework="pt") as fh:
        key = next(k for k in fh.keys() if k.endswith(TOKEN_EMBEDDING_SUFFIX))
        vectors = fh.get_tensor(key)[torch.tensor(ids)].float()
    concept = _new_concept(name, class_word, base_model, root, "imported-lora", folder / "scheduler")
    concept.settings = {"imported_from": path.name, "trigger": words, "token": token_for(name)}
    return write_concept(concept, vectors[None], root, overwrite=overwrite, lora_file=path)
