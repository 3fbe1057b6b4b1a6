"""Draft a story file from plain text: one shot per line (or per sentence), `query | prompt` when wanted."""

from __future__ import annotations

import re

from aas_core.errors import InputError
from aas_core.metrics import clip_text
from aas_core.story.schema import MAX_SHOTS, TOKEN, Character, Defaults, GenerateSettings, Shot, Story, with_ids

SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_units(text: str) -> list[str]:
    """Shot texts: each non-empty line when there are several lines, else each sentence."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) > 1:
        return lines
    return [s.strip() for s in SENTENCE_END.split(lines[0])] if lines else []


def draft_story(text: str, title: str = "") -> Story:
    """A story with one shot per line/sentence; `query | prompt [| caption]` splits retrieval from painting."""
    units = split_units(text)
    if not units:
        raise InputError("the text is empty; write one sentence (or line) per shot, e.g. 'A fox runs through snow.'")
    if len(units) > MAX_SHOTS:
        raise InputError(f"the text makes {len(units)} shots, more than the {MAX_SHOTS} a story may hold; shorten it or split it")
    shots, names = [], []
    for unit in units:
        parts = [p.strip() for p in unit.split("|")]
        if len(parts) > 3 or not all(parts):
            raise InputError(f"cannot read {unit!r}: use 'sentence', 'query | prompt' or 'query | prompt | caption'")
        if len(parts) == 1:
            query, prompt, caption = clip_text(parts[0]), parts[0], clip_text(parts[0])
        elif len(parts) == 2:
            query, prompt, caption = parts[0], parts[1], clip_text(parts[1])
        else:
            query, prompt, caption = parts
        names.extend(n for n in TOKEN.findall(prompt) if n not in names)
        shots.append(Shot(prompt=prompt, query=query, caption=caption))
    return with_ids(Story(shots=shots, title=title, characters=[Character(name=n) for n in names], defaults=engine_defaults()))


def engine_defaults() -> Defaults:
    """Story defaults spelling out the generation engine's own defaults, so the drafted file shows what to edit."""
    from aas_core.generate.spec import ShotSpec

    spec = ShotSpec(prompt="draft")
    keep = ("backend", "width", "height", "frames", "fps", "steps", "guidance", "strength")
    return Defaults(generate=GenerateSettings(**{k: getattr(spec, k) for k in keep}))
