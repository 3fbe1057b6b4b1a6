"""The story project file: a versioned YAML/JSON schema, validated with errors naming line and field.

Parsing goes through PyYAML's node tree (JSON is YAML too) so every error can point at its line;
pydantic dataclasses check types and refuse unknown fields. Before anything is built, one streaming pass
over the parser's events refuses what could exhaust the server (aliases, deep nesting, too many nodes)
and non-finite numbers, so a hostile file costs at most one bounded scan.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

from aas_core.depth.clip import FIT_MODES, MAX_SPEED
from aas_core.depth.pipeline import MAX_SMOOTHING
from aas_core.depth.stabilize import NORMALIZE_MODES
from aas_core.errors import InputError
from aas_core.generate.presets import Preset
from aas_core.limits import (
    MAX_CAPTION_CHARS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_QUERY_CHARS,
    MAX_STORY_BYTES,
    MAX_STORY_DEPTH,
    MAX_STORY_NODES,
    MAX_TITLE_CHARS,
)
from aas_core.stitch import Transition
from aas_core.tokens import NAME_PATTERN, TOKEN

SCHEMA_VERSION = 1
MAX_SHOTS = 100
"""More shots than this is refused: at ~2 s a shot that is a 3-minute film, hours of GPU time."""
MAX_ERRORS_SHOWN = 12
SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")
NON_FINITE = re.compile(r"[-+]?\.?(nan|inf|infinity)", re.IGNORECASE)
"""Plain scalars YAML 1.1 reads as NaN/infinity (`.nan`, `.inf`) or that JSON writers emit (`NaN`, `Infinity`)."""

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
_RECORD = {"config": _STRICT, "kw_only": True}


@dataclass(**_RECORD)
class Character:
    """A personalised character: `<name>` in prompts stands for the learned concept."""

    name: str
    concept: str = ""
    """Concept name in the concepts folder; empty = same as `name`."""

    @property
    def concept_name(self) -> str:
        """The concept to load."""
        return self.concept or self.name


@dataclass(**_RECORD)
class ClipRef:
    """A chosen clip span: a search hit or the user's own file (path relative to the story file)."""

    path: str
    start: float = Field(default=0.0, ge=0.0)
    end: Optional[float] = Field(default=None, gt=0.0)


ClipChoice = Annotated[
    Union[Annotated[str, Tag("clip-path")], Annotated[ClipRef, Tag("clip-ref")]],
    Discriminator(lambda v: "clip-path" if isinstance(v, str) else "clip-ref"),
]
"""`auto` (the top search hit for the shot's query), a file path, or {path, start, end}."""
_TAGS = frozenset({"clip-path", "clip-ref"})


class DepthOptions(TypedDict, total=False):
    """Extra keyword arguments of `aas_core.depth.depth_from_clip`, with the depth engine's own ranges."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]  # unknown options are refused with their line

    speed: Annotated[float, Field(gt=0, le=MAX_SPEED)]
    fit: Literal[FIT_MODES]  # type: ignore[valid-type]
    smoothing: Annotated[float, Field(ge=0, le=MAX_SMOOTHING)]
    normalize_mode: Literal[NORMALIZE_MODES]  # type: ignore[valid-type]
    use_cache: bool
    batch_size: Annotated[int, Field(ge=1, le=1024)]


@dataclass(**_RECORD)
class DepthSettings:
    """How the motion structure is extracted from the clip."""

    estimator: Optional[str] = None
    """Registry depth model name; None = the depth engine's default."""
    options: DepthOptions = Field(default_factory=lambda: DepthOptions())
    """Extra keyword arguments of `aas_core.depth.depth_from_clip` (e.g. smoothing), checked by `story check`."""


@dataclass(**_RECORD)
class GenerateSettings:
    """Generation settings; in a shot every field overrides the story defaults."""

    backend: Optional[str] = None
    width: Optional[int] = Field(default=None, ge=16, le=4096)
    height: Optional[int] = Field(default=None, ge=16, le=4096)
    frames: Optional[int] = Field(default=None, ge=1, le=1024)
    fps: Optional[float] = Field(default=None, gt=0, le=120)
    steps: Optional[int] = Field(default=None, ge=1, le=1000)
    guidance: Optional[float] = Field(default=None, ge=0)
    strength: Optional[float] = Field(default=None, ge=0)
    negative_prompt: Optional[str] = Field(default=None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    preset: Optional[Preset] = None
    """Speed preset (aas_core.generate.presets): fast = few-step distilled motion model, no CFG."""
    ip_scale: Optional[float] = Field(default=None, ge=0, le=2)
    """Weight of instant (IP-Adapter) characters' photos in this shot; None = each character's own."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific fields of the generation engine's ShotSpec."""


@dataclass(**_RECORD)
class Defaults:
    """Settings every shot inherits."""

    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    depth: DepthSettings = Field(default_factory=DepthSettings)
    seed: int = 0
    """Shot i without its own seed uses seed + i."""
    transition: Transition = "crossfade"
    transition_duration: float = Field(default=0.5, ge=0, le=10)
    min_clip_duration: float = Field(default=0.0, ge=0)
    """Retrieval ignores clips shorter than this (seconds)."""


@dataclass(**_RECORD)
class Output:
    """How the shots are assembled."""

    title_card: bool = True
    title_duration: float = Field(default=2.0, gt=0, le=30)
    captions: bool = True
    music: Optional[str] = None
    """Audio file (path relative to the story file): looped with crossfades when shorter than the video, trimmed and faded out when longer."""
    music_start: float = Field(default=0.0, ge=0)
    music_volume: float = Field(default=1.0, ge=0, le=4)
    music_fade_out: float = Field(default=2.0, ge=0)


@dataclass(**_RECORD)
class Shot:
    """One shot: what motion to retrieve, what to paint, and how it joins the next."""

    id: str = ""
    """Stable name (letters, digits, - and _); empty = shot-NN by position."""
    query: str = Field(default="", max_length=MAX_QUERY_CHARS)
    """Retrieval text; empty = the prompt without `<concept>` tokens."""
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    caption: str = Field(default="", max_length=MAX_CAPTION_CHARS)
    clip: ClipChoice = "auto"
    seed: Optional[int] = None
    depth: Optional[DepthSettings] = None
    generate: Optional[GenerateSettings] = None
    transition: Optional[Transition] = None
    """Into the next shot; None = the default."""
    transition_duration: Optional[float] = Field(default=None, ge=0, le=10)


@dataclass(**_RECORD)
class Story:
    """A whole story project."""

    version: int = SCHEMA_VERSION
    title: str = Field(default="", max_length=MAX_TITLE_CHARS)
    characters: list[Character] = Field(default_factory=list)
    library: Optional[str] = None
    """Clip library folder for retrieval (relative to the story file); None = the default library."""
    defaults: Defaults = Field(default_factory=Defaults)
    output: Output = Field(default_factory=Output)
    shots: list[Shot] = Field(default_factory=list)


_ADAPTER: Optional[TypeAdapter] = None


def _adapter() -> TypeAdapter:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(Story)
    return _ADAPTER


def _lines(node: Any, path: tuple = (), out: Optional[dict] = None, source: str = "") -> dict[tuple, int]:
    """Map every key path of a YAML node tree to its 1-based line; duplicate keys are errors."""
    import yaml

    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value
            if name in seen:
                raise InputError(
                    f"{source} line {key.start_mark.line + 1}: {_dotted(path) or 'top level'} repeats the key {name!r} "
                    f"(first on line {seen[name]}); keep one"
                )
            seen[name] = key.start_mark.line + 1
            out[path + (name,)] = key.start_mark.line + 1
            _lines(value, path + (name,), out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (i,), out, source)
    return out


def _scan(text: str, source: str) -> None:
    """Refuse, in one streaming pass before any tree is built, what could exhaust the server or is not a number.

    Aliases can expand a few hundred bytes into gigabytes (a "billion laughs" file) and deep nesting
    overflows the recursive composer, so both are refused here, where memory and stack stay flat.
    """
    import yaml

    if len(text) > MAX_STORY_BYTES:
        raise InputError(f"{source} is {len(text):,} characters; a story file may hold at most {MAX_STORY_BYTES:,}: split the story")
    stack: list[list] = []  # per open collection: [is_mapping, current key or index, next scalar is a key]
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                raise InputError(f"{source} line {line}: aliases (*{event.anchor}) are not allowed in a story file; write the value out")
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
                _advance(stack)
                continue
            if not isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                continue
            nodes += 1
            if nodes > MAX_STORY_NODES:
                raise InputError(f"{source} line {line}: more than {MAX_STORY_NODES:,} values; a story is not this big: split it")
            if event.anchor is not None:
                raise InputError(
                    f"{source} line {line}: anchors (&{event.anchor}) are not allowed in a story file; put shared settings under `defaults:`"
                )
            is_key = bool(stack) and stack[-1][0] and stack[-1][2]
            if isinstance(event, yaml.ScalarEvent):
                if is_key:
                    stack[-1][1], stack[-1][2] = event.value, False
                    continue
                if event.style is None and NON_FINITE.fullmatch(event.value):
                    where = _dotted(tuple(frame[1] for frame in stack)) or "top level"
                    raise InputError(
                        f"{source} line {line}: {where}: {event.value} is not a finite number; use a number (quote it if you meant text)"
                    )
                _advance(stack)
                continue
            if is_key:
                raise InputError(f"{source} line {line}: a key must be a plain name, not a list or mapping")
            if len(stack) >= MAX_STORY_DEPTH:
                raise InputError(f"{source} line {line}: nested more than {MAX_STORY_DEPTH} levels deep; a story is at most a few levels deep")
            mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append([mapping, None if mapping else 0, True])
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from exc


def _advance(stack: list[list]) -> None:
    """A value ended: its mapping expects a key next, its sequence the next index."""
    if stack:
        if stack[-1][0]:
            stack[-1][2] = True
        else:
            stack[-1][1] += 1


def _syntax_error(exc: Exception, source: str) -> InputError:
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return InputError(f"{source}{where}: not valid YAML ({problem}); fix the syntax there")


def _join_surrogates(value: Any, path: tuple, bad: list[tuple]) -> Any:
    """JSON writers escape emoji as surrogate pairs (`\\ud83d\\ude00`), which YAML keeps as two characters: join them."""
    if isinstance(value, str):
        if not any("\ud800" <= ch <= "\udfff" for ch in value):
            return value
        try:
            return value.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            bad.append(path)
            return value
    if isinstance(value, dict):
        return {_join_surrogates(k, path, bad): _join_surrogates(v, path + (k,), bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_surrogates(v, path + (i,), bad) for i, v in enumerate(value)]
    return value


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(lines: dict[tuple, int], loc: tuple) -> Optional[int]:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def parse_story(text: str, source: str = "story") -> Story:
    """Validate a story's YAML/JSON text; InputError lists every problem with its line and field."""
    import yaml

    _scan(text, source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from exc
    finally:
        loader.dispose()
    if node is None or not isinstance(data, dict):
        raise InputError(f"{source}: a story must be a mapping with at least `shots:` (draft one: python -m aas_core story new TEXT)")
    lines = _lines(node, source=source)
    bad: list[tuple] = []
    data = _join_surrogates(data, (), bad)
    if bad:
        where = f"{source} line {_line_of(lines, bad[0])}: {_dotted(bad[0])}"
        raise InputError(f"{where}: holds a broken \\u escape (half of a surrogate pair); fix the text")
    version = data.get("version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise InputError(f"{source} line {lines.get(('version',), 1)}: story version {version} is newer than this program ({SCHEMA_VERSION}); update Animate-A-Story")
    shots = data.get("shots")
    if shots is None or (isinstance(shots, list) and len(shots) == 0):
        raise InputError(f"{source} line {lines.get(('shots',), 1)}: the story has no shots; add at least one under `shots:`")
    if isinstance(shots, list) and len(shots) > MAX_SHOTS:
        raise InputError(
            f"{source} line {lines.get(('shots',), 1)}: {len(shots)} shots is more than the {MAX_SHOTS} a story may hold; "
            "split it into several stories"
        )
    try:
        story = _adapter().validate_python(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in _TAGS)
            line = _line_of(lines, loc)
            msg = err["msg"]
            if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
                msg = "unknown field (check the spelling; see the story schema in the README)"
            elif err["type"] in ("missing", "missing_argument", "missing_keyword_only_argument"):
                msg = "required field is missing"
            elif err["type"] == "string_too_long":
                msg = f"{len(err['input']):,} characters long; the limit is {err['ctx']['max_length']:,}: shorten it"
            problems.append(f"{source} line {line}: {_dotted(loc) or 'top level'}: {msg}")
        shown = problems[:MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        raise InputError("invalid story:\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")) from None
    _check_semantics(story, lines, source)
    return story


def _check_semantics(story: Story, lines: dict[tuple, int], source: str) -> None:
    """Rules across fields: unique ids, known `<concept>` tokens, sane clip spans."""
    problems = []
    names = [c.name for c in story.characters]
    for i, ch in enumerate(story.characters):
        if not NAME_PATTERN.match(ch.name):
            problems.append((("characters", i, "name"), f"character name {ch.name!r} must be 1-40 lowercase letters, digits, - or _"))
        if names.count(ch.name) > 1:
            problems.append((("characters", i, "name"), f"character {ch.name!r} is defined twice"))
    seen: set[str] = set()
    for i, shot in enumerate(story.shots):
        if shot.id and not SHOT_ID.match(shot.id):
            problems.append((("shots", i, "id"), f"shot id {shot.id!r} must be 1-40 letters, digits, - or _"))
        if shot.id and shot.id in seen:
            problems.append((("shots", i, "id"), f"shot id {shot.id!r} is used twice; ids must be unique"))
        seen.add(shot.id)
        for token in TOKEN.findall(shot.prompt):
            if token not in names:
                known = ", ".join(f"<{n}>" for n in names) or "none defined"
                problems.append((("shots", i, "prompt"), f"<{token}> is not a character of this story (known: {known}); add it under `characters:`"))
        if isinstance(shot.clip, ClipRef) and shot.clip.end is not None and shot.clip.end <= shot.clip.start:
            problems.append((("shots", i, "clip", "end"), f"clip end {shot.clip.end} must be after start {shot.clip.start}"))
        if isinstance(shot.clip, str) and not shot.clip.strip():
            problems.append((("shots", i, "clip"), "clip must be `auto`, a file path, or {path, start, end}"))
    if problems:
        raise InputError("invalid story:\n  " + "\n  ".join(f"{source} line {_line_of(lines, loc)}: {_dotted(loc)}: {msg}" for loc, msg in problems[:MAX_ERRORS_SHOWN]))


def with_ids(story: Story) -> Story:
    """The story with every shot id filled (shot-NN by position), so caches follow shots, not positions."""
    width = max(2, len(str(len(story.shots))))
    shots = [dataclasses.replace(s, id=s.id or f"shot-{i + 1:0{width}d}") for i, s in enumerate(story.shots)]
    ids = [s.id for s in shots]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise InputError(f"shot ids {', '.join(dupes)} collide with automatic ids; give those shots other ids")
    return dataclasses.replace(story, shots=shots)


def load_story(path: str | os.PathLike[str]) -> Story:
    """Read and validate a story file (YAML or JSON); shot ids filled."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"story file {path} does not exist; draft one with: python -m aas_core story new TEXT --out {path}")
    size = path.stat().st_size
    if size > MAX_STORY_BYTES:
        raise InputError(f"{path.name} is {size:,} bytes; a story file may be at most {MAX_STORY_BYTES:,}: split the story")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} ({exc}); save it as UTF-8 text") from exc
    return with_ids(parse_story(text, source=path.name))


def _prune(value: Any) -> Any:
    """Drop empty mappings (`options: {}`) so written files show only what is set."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v != {}}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def story_to_dict(story: Story) -> dict[str, Any]:
    """JSON/YAML-ready form of a story (round-trips through `parse_story`)."""
    return _prune(_adapter().dump_python(story, mode="json", exclude_none=True))


def dump_story(story: Story) -> str:
    """A story as YAML text (field order kept, unicode kept)."""
    import yaml

    return yaml.safe_dump(story_to_dict(story), sort_keys=False, allow_unicode=True, width=100)


def save_story(story: Story, path: str | os.PathLike[str]) -> Path:
    """Write a story as YAML atomically."""
    from aas_core.fsutil import atomic_write_bytes

    atomic_write_bytes(path, dump_story(story).encode("utf-8"))
    return Path(path)
