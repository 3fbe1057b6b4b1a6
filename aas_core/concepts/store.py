"""Concept folders: `weights/concepts/<name>/` with safetensors tensors, a JSON, photos and thumbnails."""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Literal, Optional, Sequence, TypeVar

from aas_core.concepts.ip_adapter import DEFAULT_IP_SCALE, DEFAULT_IP_VARIANT, EMBEDS_FILE
from aas_core.concepts.timeinv import NAME_PATTERN, bucket_edges, bucket_of, token_for, vector_tokens
from aas_core.errors import InputError
from aas_core.fsutil import atomic_dir, atomic_write_json, exclusive, fsync_dir, storage_guard
from aas_core.weights import weights_dir

if TYPE_CHECKING:
    import torch
    from PIL import Image

FORMAT_VERSION = 1
META_FILE = "concept.json"
TABLE_FILE = "embeddings.safetensors"
TABLE_KEY = "timeinv"
LORA_FILE = "lora.safetensors"
ConceptSource = Literal["trained", "imported-ti", "imported-lora"]
CONCEPT_SOURCES: tuple[str, ...] = ("trained", "imported-ti", "imported-lora")
ConceptMethod = Literal["ip-adapter", "timeinv", "both"]
CONCEPT_METHODS: tuple[str, ...] = ("ip-adapter", "timeinv", "both")
"""ip-adapter: photos + image embeddings, seconds, no training; timeinv: learnt token vectors; both: the two at once."""

Root = Optional[str | os.PathLike[str]]


def concepts_dir(root: Root = None) -> Path:
    """Where concepts live: `<weights folder>/concepts`."""
    return weights_dir(root) / "concepts"


def check_name(name: str) -> str:
    """Return `name` if it is a safe concept name, else an InputError saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InputError(
            f"concept name {name!r} is not allowed: use 1-40 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. alice, old-tom); it becomes the prompt token <name>"
        )
    return name


def concept_folder(name: str, root: Root = None) -> Path:
    """The folder of concept `name` (the name is checked first, so no path escapes the concepts folder)."""
    return concepts_dir(root) / check_name(name)


def check_free(name: str, root: Root = None, overwrite: bool = False) -> None:
    """Refuse to replace an existing concept unless `overwrite`."""
    if concept_folder(name, root).exists() and not overwrite:
        raise InputError(
            f"a concept named {name!r} already exists in {concepts_dir(root)}; choose another name, "
            "delete it first (concept delete NAME) or pass --overwrite"
        )


@dataclass
class Concept:
    """A learnt character: its TimeInv table (K buckets x n vectors x D), optional LoRA and photos."""

    name: str
    class_word: str
    buckets: int
    vectors: int
    dim: int
    base_model: str
    base_hub_id: str = ""
    num_train_timesteps: int = 1000
    source: ConceptSource = "trained"
    method: ConceptMethod = "timeinv"
    ip_scale: float = DEFAULT_IP_SCALE
    """IP-Adapter weight of the photos (ip-adapter and both); a shot may override it."""
    ip_variant: str = DEFAULT_IP_VARIANT
    """IP-Adapter file used (plain, plus, plus-face); see aas_core.concepts.ip_adapter."""
    tiny: bool = False
    lora: bool = False
    settings: dict = field(default_factory=dict)
    photos: list[str] = field(default_factory=list)
    thumbnails: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    created: str = ""
    format_version: int = FORMAT_VERSION
    folder: Optional[Path] = field(default=None, compare=False)
    _table: Optional["torch.Tensor"] = field(default=None, repr=False, compare=False)

    @property
    def token(self) -> str:
        """The prompt token, `<name>`."""
        return token_for(self.name)

    @property
    def tokens(self) -> list[str]:
        """The n tokenizer entries the token expands to."""
        return vector_tokens(self.token, self.vectors)

    @property
    def has_table(self) -> bool:
        """Whether `<name>` has learnt token vectors (an ip-adapter concept's token reads as its class word)."""
        return self.method != "ip-adapter"

    @property
    def uses_ip(self) -> bool:
        """Whether shots condition on the photos through IP-Adapter."""
        return self.method in ("ip-adapter", "both")

    def ip_embeds(self) -> dict[str, "torch.Tensor"]:
        """The photos' stored IP-Adapter image embeddings (see `aas_core.concepts.ip_adapter`)."""
        from aas_core.concepts.ip_adapter import read_embeds

        if self.folder is None or not self.uses_ip:
            raise InputError(f"concept {self.name} has no photo embeddings (method {self.method})")
        return read_embeds(self.folder / EMBEDS_FILE, self.name)

    def bucket(self, timestep: float) -> int:
        """The bucket used at a denoising timestep."""
        return bucket_of(timestep, self.buckets, self.num_train_timesteps)

    def table(self) -> "torch.Tensor":
        """The (K, n, D) float32 table (read from the folder's safetensors on first use)."""
        if self._table is None:
            if not self.has_table:
                raise InputError(f"concept {self.name} is an instant (IP-Adapter) character: it has no learnt vectors")
            if self.folder is None:
                raise ValueError(f"concept {self.name} has no table and no folder")
            from safetensors.torch import load_file

            tensors = load_file(str(self.folder / TABLE_FILE))
            table = tensors.get(TABLE_KEY)
            if table is None or tuple(table.shape) != (self.buckets, self.vectors, self.dim):
                raise InputError(
                    f"concept {self.name}: {TABLE_FILE} does not hold a ({self.buckets}, {self.vectors}, {self.dim}) "
                    f"table; the folder is damaged: delete it (concept delete {self.name}) and train again"
                )
            self._table = table.float()
        return self._table

    @property
    def lora_path(self) -> Optional[Path]:
        """The LoRA safetensors file, when the concept has one."""
        return self.folder / LORA_FILE if (self.lora and self.folder is not None) else None

    def reference_images(self) -> list["Image.Image"]:
        """The concept's photos (square crops) as RGB images: reference images for the VACE backend."""
        from PIL import Image

        if self.folder is None:
            return []
        images = []
        for rel in self.photos:
            with Image.open(self.folder / rel) as img:
                images.append(img.convert("RGB"))
        return images

    def to_json(self) -> dict:
        """The JSON stored in `concept.json` (everything but the folder and tensors)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("folder", "_table")}
        data["token"] = self.token
        data["bucket_edges"] = bucket_edges(self.buckets, self.num_train_timesteps)
        return data

    def summary(self) -> dict:
        """A JSON-ready description for `concept list/show` and the UI."""
        data = self.to_json()
        data["folder"] = str(self.folder) if self.folder else None
        return data


def concept_from_json(data: dict, folder: Optional[Path] = None) -> Concept:
    """Build a Concept from its stored JSON (unknown keys ignored, so newer files still load)."""
    known = {f.name for f in fields(Concept)} - {"folder", "_table"}
    concept = Concept(**{k: v for k, v in data.items() if k in known})
    concept.folder = folder
    return concept


def write_concept(
    concept: Concept,
    table: Optional["torch.Tensor"],
    root: Root = None,
    overwrite: bool = False,
    photos: Sequence["Image.Image"] = (),
    lora_tensors: Optional[dict] = None,
    lora_file: Optional[Path] = None,
    validation: Sequence[Path] = (),
    ip_embeds: Optional[dict] = None,
) -> Concept:
    """Write a concept folder atomically (a crash leaves the old concept, or none, never half of one).

    `table` is None for an ip-adapter concept; `ip_embeds` (from `ip_adapter.encode_photos`) for ip-adapter and both.
    """
    from safetensors.torch import save_file

    from aas_core.concepts.photos import thumbnail

    target = concept_folder(concept.name, root)
    check_free(concept.name, root, overwrite)
    if (table is None) != (concept.method == "ip-adapter") or (ip_embeds is None) == concept.uses_ip:
        raise ValueError(f"concept method {concept.method} needs {'no ' if table is None else ''}table and "
                         f"{'' if concept.uses_ip else 'no '}IP-Adapter embeddings")
    if table is not None:
        table = table.detach().float().cpu().contiguous()
        concept.buckets, concept.vectors, concept.dim = (int(s) for s in table.shape)
    concept.created = concept.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with atomic_dir(target, overwrite=True) as tmp:
        if table is not None:
            save_file({TABLE_KEY: table}, str(tmp / TABLE_FILE), metadata={"format": "aas-timeinv", "token": concept.token})
        if ip_embeds is not None:
            save_file(ip_embeds, str(tmp / EMBEDS_FILE), metadata={"format": "aas-ip-embeds", "token": concept.token})
        concept.photos, concept.thumbnails, concept.validation = [], [], []
        for i, img in enumerate(photos):
            (tmp / "photos").mkdir(exist_ok=True)
            (tmp / "thumbs").mkdir(exist_ok=True)
            img.save(tmp / "photos" / f"{i:02d}.png")
            thumbnail(img).save(tmp / "thumbs" / f"{i:02d}.jpg", quality=90)
            concept.photos.append(f"photos/{i:02d}.png")
            concept.thumbnails.append(f"thumbs/{i:02d}.jpg")
        for path in validation:
            (tmp / "validation").mkdir(exist_ok=True)
            shutil.copyfile(path, tmp / "validation" / path.name)
            concept.validation.append(f"validation/{path.name}")
        concept.lora = lora_tensors is not None or lora_file is not None
        if lora_tensors is not None:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in lora_tensors.items()}, str(tmp / LORA_FILE))
        elif lora_file is not None:
            shutil.copyfile(lora_file, tmp / LORA_FILE)
        atomic_write_json(tmp / META_FILE, concept.to_json())
    concept.folder = target
    concept._table = table
    return concept


def load_concept(name: str, root: Root = None, base_model: Optional[str] = None) -> Concept:
    """Load a concept by name; with `base_model`, refuse one trained on another base model."""
    folder = concept_folder(name, root)
    meta = folder / META_FILE
    if not meta.is_file():
        known = ", ".join(c.name for c in list_concepts(root)) or "none yet"
        raise InputError(f"no concept named {name!r} in {concepts_dir(root)} (known: {known}); train or import it first")
    try:
        concept = concept_from_json(json.loads(meta.read_text()), folder)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{meta} is damaged ({exc}); delete the concept (concept delete {name}) and train it again") from exc
    if concept.format_version > FORMAT_VERSION:
        raise InputError(f"concept {name} was written by a newer version (format {concept.format_version}); update aas_core")
    if base_model is not None and concept.base_model != base_model:
        raise InputError(
            f"concept {name!r} was trained on base model {concept.base_model!r}, not {base_model!r}; "
            f"train it again on {base_model} (or use the {concept.base_model} backend)"
        )
    return concept


def list_concepts(root: Root = None) -> list[Concept]:
    """Every readable concept under the concepts folder, sorted by name."""
    folder = concepts_dir(root)
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or not (child / META_FILE).is_file() or not NAME_PATTERN.match(child.name):
            continue  # temp folders of atomic writes and training checkpoints start with '.'
        try:
            found.append(concept_from_json(json.loads((child / META_FILE).read_text()), child))
        except (ValueError, TypeError):
            continue
    return found


def concept_lock(name: str, root: Root = None) -> ContextManager[None]:
    """Held while concept `name` is trained, imported or deleted: a second such job is refused (BusyError) at once."""
    return exclusive(
        concepts_dir(root) / f".{check_name(name)}.lock",
        f"concept {name!r} is being trained or written right now; cancel that job (or wait for it to finish), then try again",
    )


F = TypeVar("F", bound=Callable[..., Any])


def holding_concept_lock(fn: F) -> F:
    """Run `fn(name, ..., root=...)` under `concept_lock`, so the concept cannot be deleted meanwhile (and come back)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with concept_lock(bound.arguments["name"], bound.arguments["root"]):
            return fn(*args, **kwargs)

    return locked  # type: ignore[return-value]


def delete_concept(name: str, root: Root = None) -> Path:
    """Delete a concept folder (and any unfinished training of that name); returns the removed path.

    Refused (BusyError) while the concept trains, so a finishing training cannot bring it back. The folder
    is first renamed away in one step, so a crash mid-delete never leaves half a concept listed.
    """
    folder = concept_folder(name, root)
    work = training_dir(name, root)
    with concept_lock(name, root):
        if not folder.exists() and not work.exists():
            raise InputError(f"no concept named {name!r} in {concepts_dir(root)}; see `concept list`")
        with storage_guard(folder.parent):
            for path in (folder, work):
                if path.exists():
                    trash = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
                    os.replace(path, trash)
                    fsync_dir(path.parent)
                    shutil.rmtree(trash, ignore_errors=True)
    return folder


def training_dir(name: str, root: Root = None) -> Path:
    """Where an unfinished training of `name` keeps its checkpoint and validation images."""
    return concepts_dir(root) / f".train-{check_name(name)}"

