"""Concept tokens in prompts: the one name rule, the one `<token>` pattern, and what CLIP should read instead."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}\Z")  # \Z: `$` would accept a trailing newline
"""Concept and character names: lowercase (CLIP's tokenizer lowercases prompts), digits, '-' and '_', at most 40 chars."""
TOKEN = re.compile(r"<([^<>\s]+)>")
"""A `<name>` token in a prompt. Wider than NAME_PATTERN on purpose: `<Hero>` is found, then refused by name."""


def token_for(name: str) -> str:
    """The prompt token of a concept: `<name>`."""
    return f"<{name}>"


def token_names(prompt: str) -> list[str]:
    """Names of the `<name>` tokens written in a prompt, in order of first appearance."""
    return list(dict.fromkeys(TOKEN.findall(prompt)))


def strip_tokens(prompt: str) -> str:
    """A prompt as CLIP should read it: `<concept>` tokens become the plain name (`-` and `_` as spaces)."""
    return TOKEN.sub(lambda m: m.group(1).replace("-", " ").replace("_", " "), prompt).strip()
