"""Put concepts into a diffusers pipeline for one generation, and take them out again afterwards.

AnimateDiff (and any SD1.5-family pipeline): the concept tokens go into a copy of the pipeline's
tokenizer, their vectors into the text encoder through `TokenSwap` hooks (the mean over buckets while
the pipeline encodes its prompt), and forward pre-hooks on the UNet and ControlNet replace every
`encoder_hidden_states` row that came from a prompt with concept tokens by that prompt re-encoded
with the current timestep's bucket vectors. Rows are recognised by value (to a few ulps), so the hooks
need no knowledge of how a pipeline batches (CFG halves, repeats per frame, FreeNoise's per-frame
prompt rows): rows of a prompt without concept tokens (the negative prompt) are left untouched.
IP-Adapter concepts (method ip-adapter or both) load one adapter each into the UNet, fed with the
photos' stored embeddings (`AppliedConcepts.call_kwargs`), and are unloaded on exit; an ip-adapter
concept has no vectors, so its `<name>` reads as its class word (`AppliedConcepts.prompt`).
VACE: the concepts' photos are handed out as reference images and every `<name>` reads as its class word.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal, Optional, Sequence

from aas_core.concepts import ip_adapter
from aas_core.concepts.store import Concept
from aas_core.concepts.timeinv import SwapEntry, TokenSwap, buckets_tensor
from aas_core.errors import InputError
from aas_core.limits import MAX_PROMPT_TI_VECTORS
from aas_core.registry import BACKEND_MODELS
from aas_core.tokens import TOKEN

if TYPE_CHECKING:
    import torch

ConceptBackend = Literal["animatediff", "vace"]
CONCEPT_BACKENDS: tuple[str, ...] = tuple(BACKEND_MODELS)


@dataclass
class AppliedConcepts:
    """What `apply_concepts` yields: the concepts and a log of the buckets used per denoising call."""

    concepts: list[Concept]
    buckets_used: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    """(timestep, {concept name: bucket}) for every UNet/ControlNet call that swapped rows (once per call)."""
    backend: str = "animatediff"
    ip: Optional[ip_adapter.IPState] = None
    """The IP-Adapter characters loaded for this shot (None: none)."""

    def prompt(self, text: str) -> str:
        """`text` with each `<name>` that has no learnt vectors here (ip-adapter concepts; all on VACE) as its class word."""
        words = {c.name: c.class_word or c.name for c in self.concepts if self.backend == "vace" or not c.has_table}
        return TOKEN.sub(lambda m: words.get(m.group(1), m.group(0)), text)

    def call_kwargs(self, guidance: bool, height: int, width: int, device=None, dtype=None) -> dict:
        """Extra pipeline-call arguments: the IP-Adapter embeddings (and masks); empty without IP-Adapter characters."""
        if self.ip is None:
            return {}
        return self.ip.call_kwargs(guidance, height, width, device, dtype)


@dataclass
class _Record:
    """A prompt encoding that contains concept tokens, as the pipeline produced it."""

    input_ids: "torch.Tensor"
    attention_mask: Optional["torch.Tensor"]
    base: "torch.Tensor"
    entries: list[int]
    cache: dict = field(default_factory=dict)


class _Injector:
    """The hooks of one `apply_concepts` call on one pipeline."""

    def __init__(self, swap: TokenSwap, applied: AppliedConcepts, names: Sequence[str]) -> None:
        self.swap, self.applied, self.names = swap, applied, list(names)
        self.records: list[_Record] = []
        self.encoding = False

    def text_encoder_hook(self, module, args, kwargs, output):
        """Remember every prompt row that holds concept tokens, with the encoding the pipeline got."""
        if self.encoding:
            return None
        input_ids = args[0] if args else kwargs.get("input_ids")
        if input_ids is None:
            return None
        mask = kwargs.get("attention_mask")
        hidden = output[0]
        for row in range(input_ids.shape[0]):
            entries = self.swap.entries_in(input_ids[row : row + 1])
            if not entries:
                continue
            ids = input_ids[row].detach().clone()
            if any(torch_equal(r.input_ids, ids) for r in self.records):
                continue
            self.records.append(
                _Record(ids, None if mask is None else mask[row].detach().clone(), hidden[row].detach().clone(), entries)
            )
        return None

    def _encode(self, record: _Record, timestep: "torch.Tensor") -> tuple["torch.Tensor", dict[str, int]]:
        """The record's prompt re-encoded with each of its concepts' buckets at `timestep` (cached), and those buckets."""
        import torch

        key = tuple(
            int(buckets_tensor(timestep.reshape(1), self.swap.entries[e].table.shape[0], self.swap.entries[e].num_train_timesteps))
            for e in record.entries
        )
        if key not in record.cache:
            encoder = self.swap.text_encoder
            self.encoding, self.swap.timesteps = True, timestep.reshape(1)
            try:
                with torch.no_grad():
                    mask = None if record.attention_mask is None else record.attention_mask[None].to(encoder.device)
                    record.cache[key] = encoder(record.input_ids[None].to(encoder.device), attention_mask=mask)[0][0]
            finally:
                self.encoding, self.swap.timesteps = False, None
        names = [self.names[e] for e in record.entries]
        return record.cache[key], dict(zip(names, key))

    def model_pre_hook(self, module, args, kwargs):
        """Swap the rows of concept prompts in `encoder_hidden_states` for the timestep's bucket encoding."""
        import torch

        in_kwargs = "encoder_hidden_states" in kwargs
        hidden = kwargs.get("encoder_hidden_states") if in_kwargs else (args[2] if len(args) > 2 else None)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if hidden is None or timestep is None or not self.records or not torch.is_tensor(hidden):
            return None
        timestep = torch.as_tensor(timestep).reshape(-1)
        bases = [(r, r.base.to(hidden.device, hidden.dtype)) for r in self.records if r.base.shape == hidden.shape[1:]]
        # A few ulps of slack: FreeNoise re-mixes a prompt's rows per frame ((1 - a) * x + a * x).
        tol = 8 * torch.finfo(hidden.dtype).eps
        new, used = None, []
        for row in range(hidden.shape[0]):
            for record, base in bases:
                if torch.allclose(base, hidden[row], rtol=tol, atol=tol):
                    step = (timestep[row] if timestep.numel() == hidden.shape[0] else timestep[0]).detach().cpu()
                    encoded, buckets = self._encode(record, step)
                    if new is None:
                        new = hidden.clone()
                    new[row] = encoded.to(hidden.device, hidden.dtype)
                    if (int(step), buckets) not in used:
                        used.append((int(step), buckets))
                    break
        if new is None:
            return None
        self.applied.buckets_used.extend(used)
        if in_kwargs:
            return args, {**kwargs, "encoder_hidden_states": new}
        return args[:2] + (new,) + tuple(args[3:]), kwargs


def torch_equal(a: "torch.Tensor", b: "torch.Tensor") -> bool:
    """Same shape and values."""
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b.to(a.device)))


def check_compatible(pipe, concepts: Sequence[Concept], base_model: Optional[str] = None) -> None:
    """Refuse concepts trained on another base model (or another text-encoder width) than the pipeline's."""
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        raise InputError(f"concept list {names} names a concept twice")
    total = sum(c.vectors for c in concepts)
    if total > MAX_PROMPT_TI_VECTORS:
        raise InputError(
            f"the concepts of this prompt ({', '.join(names)}) take {total} token vectors; at most {MAX_PROMPT_TI_VECTORS} "
            "fit in one prompt: use fewer characters in this shot"
        )
    width = int(pipe.text_encoder.config.hidden_size)
    for concept in concepts:
        if base_model is not None and concept.base_model != base_model:
            raise InputError(
                f"concept {concept.name!r} was trained on base model {concept.base_model!r}, not {base_model!r}; "
                f"train it again on {base_model}"
            )
        if concept.dim != width:
            raise InputError(
                f"concept {concept.name!r} has {concept.dim}-wide vectors but this pipeline's text encoder is {width} wide: "
                f"it was made for another base model ({concept.base_model}{', tiny' if concept.tiny else ''}); "
                "train or import it for this model"
            )


@contextlib.contextmanager
def apply_concepts(
    pipe,
    concepts: Sequence[Concept],
    backend: ConceptBackend = "animatediff",
    base_model: Optional[str] = None,
    weights_root=None,
    ip_scale: Optional[float] = None,
) -> Iterator[AppliedConcepts]:
    """Make `<name>` tokens (and IP-Adapter photos) work in `pipe` for the duration of the block; all undone on exit.

    `ip_scale` overrides every IP-Adapter concept's own scale; `weights_root` holds the IP-Adapter files.
    """
    if backend not in CONCEPT_BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(CONCEPT_BACKENDS)}")
    # VACE: the caller passes each concept's reference_images().
    applied = AppliedConcepts(concepts=list(concepts), backend=backend)
    if backend == "vace" or not concepts:
        yield applied
        return
    characters = ip_adapter.ip_characters(concepts, ip_scale)
    with _timeinv_applied(pipe, [c for c in concepts if c.has_table], applied, base_model):
        if not characters:
            yield applied
            return
        states = ip_adapter.read_adapters(pipe, characters, weights_root)  # every check before the pipeline changes
        try:
            applied.ip = ip_adapter.load_into(pipe, characters, states)
            yield applied
        finally:
            ip_adapter.unload(pipe)  # also after a load that failed half-way
            applied.ip = None


@contextlib.contextmanager
def _timeinv_applied(pipe, concepts: Sequence[Concept], applied: AppliedConcepts, base_model: Optional[str]) -> Iterator[None]:
    """TokenSwap, hooks and LoRAs of the concepts that have learnt vectors (nothing when there are none)."""
    if not concepts:
        yield
        return
    check_compatible(pipe, concepts, base_model)
    encoder = pipe.text_encoder
    original_tokenizer = pipe.tokenizer
    tokenizer = copy.deepcopy(original_tokenizer)
    entries = [SwapEntry(c.token, c.table().to(encoder.device), c.num_train_timesteps) for c in concepts]
    swap = TokenSwap(tokenizer, encoder, entries)
    injector = _Injector(swap, applied, [c.name for c in concepts])
    handles = []
    adapters = [(c, f"concept_{c.name.replace('-', '_')}") for c in concepts if c.lora_path is not None]
    previous_adapters: list[str] = []
    try:
        pipe.tokenizer = tokenizer
        swap.install()
        handles.append(encoder.register_forward_hook(injector.text_encoder_hook, with_kwargs=True))
        for attr in ("unet", "controlnet"):
            module = getattr(pipe, attr, None)
            if module is not None:
                handles.append(module.register_forward_pre_hook(injector.model_pre_hook, with_kwargs=True))
        if adapters:
            previous_adapters = list(pipe.get_active_adapters()) if getattr(pipe.unet, "peft_config", None) else []
            for concept, adapter in adapters:
                pipe.load_lora_weights(str(concept.folder), weight_name=concept.lora_path.name, adapter_name=adapter)
            pipe.set_adapters(previous_adapters + [a for _, a in adapters])
        yield
    finally:
        for handle in handles:
            handle.remove()
        swap.remove()
        pipe.tokenizer = original_tokenizer
        if adapters and not previous_adapters:
            pipe.unload_lora_weights()  # no LoRA before us: take the adapter layers out entirely
        elif adapters:
            loaded = {a for names in pipe.get_list_adapters().values() for a in names}
            pipe.delete_adapters([a for _, a in adapters if a in loaded])
            pipe.set_adapters(previous_adapters)
