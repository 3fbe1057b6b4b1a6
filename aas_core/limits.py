"""Size limits on everything a visitor or a file can hand the engines, so no input can exhaust the server.

One home for every limit: the engines (ShotSpec, story schema, search, stitch, concept import) check
them, so the CLI, the Python API and the app refuse the same inputs with the same message.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from aas_core.errors import InputError


def is_finite_number(value: Any) -> bool:
    """True for a finite int or float (numpy scalars too); False for bools, text, None, NaN and infinities."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)

MAX_PROMPT_CHARS = 2000
"""CLIP reads 77 tokens (~300 characters); 2000 leaves room for long-prompt encoders and weighting syntax."""
MAX_NEGATIVE_PROMPT_CHARS = 2000
MAX_CAPTION_CHARS = 300
"""A caption is one or two lines under a shot; more is unreadable on a frame anyway."""
MAX_TITLE_CHARS = 300
MAX_QUERY_CHARS = 1000
"""Retrieval text goes through the same 77-token CLIP text encoder as prompts."""
MAX_REMOTE_CLIP_BYTES = 200_000_000
"""A captioned web clip fetched on use: stock clips are 1-60 MB; a minute of 1080p H.264 is ~100 MB."""

MAX_STORY_BYTES = 1_000_000
"""A 100-shot story with long prompts is well under 500 KB; more is not a story."""
MAX_STORY_DEPTH = 50
"""Nesting depth of a story file's YAML/JSON tree; the schema itself is under 10 deep."""
MAX_STORY_NODES = 20_000
"""YAML values in one story file (100 fully-set shots hold ~4,000); bounds parsing time (pure-Python YAML, ~0.1 s per 1,000)."""

MAX_TI_VECTORS = 16
"""Vectors per textual-inversion token; public embeddings use 1-8. The tokenizer lookup grows quadratically."""
MAX_PROMPT_TI_VECTORS = 64
"""Concept vectors in one prompt (the 77-token CLIP window holds 75 words in all)."""


def check_text(value: Any, field: str, limit: int) -> str:
    """Return `value` (None -> "") if it is text of at most `limit` characters; else InputError naming field, length and limit."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{field} must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise InputError(f"{field} is {len(value):,} characters long; the limit is {limit:,}: shorten it")
    return value
