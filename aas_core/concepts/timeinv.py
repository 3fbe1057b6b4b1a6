"""TimeInv: a textual inversion whose token vectors depend on the denoising timestep.

A concept owns a table of K x n vectors: the timestep range [0, T) is cut into K equal buckets and
bucket k holds the n vectors its token stands for at those timesteps. `TokenSwap` puts the vectors
into a CLIP text encoder without touching its weights: the concept's tokens get ids past the end of
the vocabulary, a pre-hook on the token-embedding layer maps them to a valid id and a forward hook
writes the bucket's vectors at their positions (differentiably, so the same code trains them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from aas_core.errors import InputError

# Re-exported: the name rule and token pattern live in aas_core.tokens (one source for story, metrics, concepts).
from aas_core.tokens import NAME_PATTERN, TOKEN, token_for  # noqa: F401
from aas_core.tokens import token_names as concept_names_in  # noqa: F401

if TYPE_CHECKING:
    import torch


def vector_tokens(token: str, n: int) -> list[str]:
    """The n tokenizer entries of a multi-vector token, in diffusers' naming (`<a>`, `<a>_1`, ...)."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def expand_prompt(prompt: str, tokens: dict[str, int]) -> str:
    """Replace each concept token by its n vector tokens (what diffusers' maybe_convert_prompt does)."""
    for token, n in tokens.items():
        prompt = prompt.replace(token, " ".join(vector_tokens(token, n)))
    return prompt


def bucket_of(timestep: float, buckets: int, num_train_timesteps: int = 1000) -> int:
    """The bucket (0 = least noise) that a timestep in [0, num_train_timesteps) falls into."""
    index = int(float(timestep) * buckets // num_train_timesteps)
    return min(max(index, 0), buckets - 1)


def bucket_edges(buckets: int, num_train_timesteps: int = 1000) -> list[int]:
    """First timestep of each bucket (for display and the concept JSON)."""
    return [-(-k * num_train_timesteps // buckets) for k in range(buckets)]


def buckets_tensor(timesteps: "torch.Tensor", buckets: int, num_train_timesteps: int) -> "torch.Tensor":
    """Vectorised `bucket_of` for a tensor of timesteps (long result, same shape)."""
    import torch

    index = torch.div(timesteps.double() * buckets, num_train_timesteps, rounding_mode="floor").long()
    return index.clamp(0, buckets - 1)


@dataclass
class SwapEntry:
    """One concept inside a TokenSwap: its token, timestep table (K, n, D) and timestep range."""

    token: str
    table: "torch.Tensor"
    num_train_timesteps: int = 1000


class TokenSwap:
    """Adds concept tokens to a tokenizer and swaps their vectors into a text encoder by timestep.

    `timesteps` selects the vectors: None uses each concept's mean over buckets; a scalar or a
    per-row tensor selects the bucket of each prompt row.
    """

    def __init__(self, tokenizer, text_encoder, entries: Sequence[SwapEntry]) -> None:
        import torch

        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.entries = list(entries)
        self.timesteps: Optional["torch.Tensor"] = None
        self._handles: list = []
        self._ids: Optional["torch.Tensor"] = None
        names = [t for e in self.entries for t in vector_tokens(e.token, e.table.shape[1])]
        clash = [t for t in names if t in tokenizer.get_vocab()]
        if clash:
            raise InputError(f"tokens {clash} are already in the tokenizer: a concept is applied twice (nested apply_concepts?)")
        tokenizer.add_tokens(names)
        ids = tokenizer.convert_tokens_to_ids(names)
        self.first_id = min(ids)
        # Lookup (id - first_id) -> (entry index, vector index); -1 marks ids that are not ours.
        size = max(ids) - self.first_id + 1
        self._entry_of = torch.full((size,), -1, dtype=torch.long)
        self._vector_of = torch.zeros((size,), dtype=torch.long)
        pos = 0
        for e_index, entry in enumerate(self.entries):
            for v_index in range(entry.table.shape[1]):
                self._entry_of[ids[pos] - self.first_id] = e_index
                self._vector_of[ids[pos] - self.first_id] = v_index
                pos += 1

    @property
    def token_counts(self) -> dict[str, int]:
        """Concept token -> number of vectors (for `expand_prompt`)."""
        return {e.token: int(e.table.shape[1]) for e in self.entries}

    def concept_mask(self, input_ids: "torch.Tensor") -> "torch.Tensor":
        """Boolean mask of the positions of `input_ids` that hold one of our tokens."""
        offset = input_ids - self.first_id
        inside = (offset >= 0) & (offset < self._entry_of.numel())
        mask = inside.clone()
        mask[inside] = self._entry_of.to(input_ids.device)[offset[inside]] >= 0
        return mask

    def entries_in(self, input_ids: "torch.Tensor") -> list[int]:
        """Indices of the entries whose tokens occur in `input_ids`."""
        mask = self.concept_mask(input_ids)
        found = self._entry_of.to(input_ids.device)[(input_ids[mask] - self.first_id)]
        return sorted(set(found.tolist()))

    def _vectors(self, entry_index: int, rows: "torch.Tensor", batch: int) -> "torch.Tensor":
        """(m, n, D) vectors of one entry for the given prompt rows under the current timesteps."""
        entry = self.entries[entry_index]
        table = entry.table
        if self.timesteps is None:
            return table.mean(dim=0).unsqueeze(0).expand(rows.numel(), -1, -1)
        steps = self.timesteps.reshape(-1).to(table.device)
        if steps.numel() == 1:
            steps = steps.expand(batch)
        buckets = buckets_tensor(steps, table.shape[0], entry.num_train_timesteps)
        return table[buckets.to(table.device)[rows.to(table.device)]]

    def _pre_hook(self, module, args):
        (input_ids,) = args[:1]
        self._ids = input_ids
        mask = self.concept_mask(input_ids)
        if not mask.any():
            return None
        return (input_ids.masked_fill(mask, 0),) + tuple(args[1:])

    def _forward_hook(self, module, args, output):
        import torch

        input_ids, self._ids = self._ids, None
        mask = self.concept_mask(input_ids)
        if not mask.any():
            return None
        rows, cols = mask.nonzero(as_tuple=True)
        offset = input_ids[rows, cols] - self.first_id
        entry_of = self._entry_of.to(input_ids.device)[offset]
        vector_of = self._vector_of.to(input_ids.device)[offset]
        out = output
        for e_index in entry_of.unique().tolist():
            pick = entry_of == e_index
            vecs = self._vectors(e_index, rows[pick], input_ids.shape[0])
            values = vecs[torch.arange(vecs.shape[0], device=vecs.device), vector_of[pick].to(vecs.device)]
            out = out.index_put((rows[pick], cols[pick]), values.to(out.device, out.dtype))
        return out

    def install(self) -> "TokenSwap":
        """Register the hooks on the text encoder's token-embedding layer."""
        layer = self.text_encoder.get_input_embeddings()
        self._handles = [layer.register_forward_pre_hook(self._pre_hook), layer.register_forward_hook(self._forward_hook)]
        return self

    def remove(self) -> None:
        """Remove the hooks (the tokenizer keeps the added tokens: callers swap in a copy)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def encode(self, prompts: Sequence[str], timesteps: Optional["torch.Tensor"] = None) -> "torch.Tensor":
        """Encode prompts (concept tokens expanded) with the vectors of `timesteps`: (B, L, D)."""
        ids = tokenize(self.tokenizer, [expand_prompt(p, self.token_counts) for p in prompts])
        previous, self.timesteps = self.timesteps, timesteps
        try:
            return self.text_encoder(ids.to(self.text_encoder.device))[0]
        finally:
            self.timesteps = previous


def tokenize(tokenizer, prompts: Sequence[str]) -> "torch.Tensor":
    """Token ids padded to the tokenizer's context length, as Stable Diffusion pipelines do."""
    return tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def init_table(text_encoder, tokenizer, class_word: str, buckets: int, vectors: int) -> "torch.Tensor":
    """A (K, n, D) float32 table filled with the mean embedding of the class word's tokens."""
    import torch

    ids = tokenizer(class_word, add_special_tokens=False).input_ids
    if not ids:
        raise InputError(f"class word {class_word!r} has no tokens; give a word such as 'woman' or 'cat'")
    weight = text_encoder.get_input_embeddings().weight.detach()
    start = weight[torch.tensor(ids, device=weight.device)].float().mean(dim=0).cpu()
    return start.expand(buckets, vectors, -1).clone().contiguous()
