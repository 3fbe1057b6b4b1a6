"""The storyboard behind the Story tab, without gradio: shots as plain dicts with their takes, the story settings,
and the conversions to a runnable `Story` and to a project file.

A board is a list of shot dicts (JSON-ready, so the API can send it):
  {id, query, prompt, caption, clip ("auto" or "name@start-end"), seed, strength, depth ({estimator, fit, speed,
   smoothing} or None), thumb, status, takes: [{video, comparison, thumb, seed, strength, prompt, clip, settings,
   depth, metrics}], pick (index into takes or None)}
File names in a board are what the visitor sees (short names in multi-user mode); the UI resolves them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aas_core.errors import InputError
from aas_core.generate.presets import default_preset
from aas_core.limits import MAX_CAPTION_CHARS, MAX_PROMPT_CHARS, MAX_QUERY_CHARS, check_text

SHOT_FIELDS = ("id", "query", "prompt", "caption", "clip", "seed", "strength")
EDITABLE = ("query", "prompt", "caption", "clip", "seed", "strength")
_TEXT_LIMITS = {"prompt": MAX_PROMPT_CHARS, "caption": MAX_CAPTION_CHARS, "query": MAX_QUERY_CHARS}
TAKE_SETTINGS = ("backend", "width", "height", "frames", "steps", "preset")
"""The story-wide settings a take records beside its files (kept in projects, so a take says how it was made)."""
APP_STATE_PREFIX = "# animate-a-story app: "
"""First line of a project saved by the app: its extra state (story text, takes, picks) as JSON in a comment,
so the same file still runs with `python -m aas_core story run`."""


@dataclass
class StorySettings:
    """Every story-wide setting of the Story tab in one object (the API sends it as one JSON argument)."""

    backend: str = "animatediff"
    width: int = 512
    height: int = 512
    frames: int = 16
    steps: int = 25
    estimator: str = "depth-anything-v2-small"
    transition: str = "crossfade"
    transition_s: float = 0.5
    captions: bool = True
    title_card: bool = True
    preset: str = dataclasses.field(default_factory=default_preset)
    """Speed preset of every shot (aas_core.generate.PRESETS)."""
    music: Optional[str] = None
    """Visitor name of the music file, or None."""

    @classmethod
    def tiny(cls) -> "StorySettings":
        """Small sizes for the --tiny workflow preview."""
        return cls(width=64, height=64, frames=8, steps=2)

    @classmethod
    def parse(cls, value: Any) -> "StorySettings":
        """From a dict (API, JSON state), refusing unknown fields and wrong types with a clear message."""
        if isinstance(value, StorySettings):
            return value
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InputError("settings must be an object with fields " + ", ".join(f.name for f in dataclasses.fields(cls)))
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(unknown)}")
        out = cls()
        for f in dataclasses.fields(cls):
            if f.name not in value or value[f.name] is None:
                continue
            raw = value[f.name]
            kind = type(getattr(out, f.name)) if f.name != "music" else str
            try:
                setattr(out, f.name, bool(raw) if kind is bool else kind(raw))
            except (TypeError, ValueError):
                raise InputError(f"setting {f.name}: {raw!r} is not a {kind.__name__}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, field: str, shot_id: str, kind: type) -> Any:
    if _blank(value):
        return None
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        raise InputError(f"{shot_id}: {field} is {value!r}; write a number or leave it empty for the default") from None


def clip_text(clip: Any, show: Callable[[str], str] = str) -> str:
    """A story clip choice as card text: `auto`, a name, or `name@start-end`."""
    if isinstance(clip, str):
        return clip if clip == "auto" else show(clip)
    end = "" if clip.end is None else f"{clip.end:g}"
    return f"{show(clip.path)}@{clip.start:g}-{end}"


def parse_clip(text: Any, shot_id: str = "shot") -> tuple[str, float, Optional[float]] | None:
    """Card text -> (name, start, end), or None for `auto`."""
    text = str(text or "").strip()
    if not text or text == "auto":
        return None
    match = re.fullmatch(r"(.+)@([0-9.]*)-([0-9.]*)", text)
    if not match:
        return text, 0.0, None
    try:
        start = float(match.group(2) or 0)
        end = float(match.group(3)) if match.group(3) else None
    except ValueError:
        raise InputError(f"{shot_id}: clip {text!r}: write name@start-end in seconds, e.g. clip.mp4@1.5-4") from None
    return match.group(1), start, end


def new_shot(shot_id: str, prompt: str = "", query: str = "", caption: str = "") -> dict[str, Any]:
    """An empty card."""
    return {"id": shot_id, "query": query, "prompt": prompt, "caption": caption, "clip": "auto", "seed": None,
            "strength": None, "depth": None, "thumb": None, "status": "new", "takes": [], "pick": None}


def board_from_story(story: Any, show: Callable[[str], str] = str) -> list[dict[str, Any]]:
    """Cards for every shot of a story (no takes yet)."""
    board = []
    for shot in story.shots:
        card = new_shot(shot.id, shot.prompt, shot.query, shot.caption)
        card["clip"] = clip_text(shot.clip, show)
        card["seed"] = shot.seed
        card["strength"] = shot.generate.strength if shot.generate and shot.generate.strength is not None else None
        if shot.depth is not None:
            card["depth"] = {"estimator": shot.depth.estimator, **dict(shot.depth.options)}
        board.append(card)
    return board


def normalized(board: Any) -> list[dict[str, Any]]:
    """A board from the API or a JSON state: every card with every field (a bad shape is refused)."""
    if board is None:
        return []
    if isinstance(board, dict) and "data" in board:
        board = board["data"]
    if not isinstance(board, list) or not all(isinstance(c, dict) for c in board):
        raise InputError("the shot list must be a list of shots (objects with id, prompt, clip...)")
    out = []
    for i, card in enumerate(board):
        full = new_shot(str(card.get("id") or f"shot-{i + 1:02d}"))
        full.update({k: v for k, v in card.items() if k in full})
        full["takes"] = list(full["takes"] or [])
        out.append(full)
    ids = [c["id"] for c in out]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise InputError(f"shot ids {', '.join(dupes)} appear twice; give each shot its own id")
    return out


def find(board: list[dict[str, Any]], shot_id: Any) -> dict[str, Any]:
    """The card of a shot id, or an InputError saying to pick one."""
    for card in board:
        if card["id"] == str(shot_id or ""):
            return card
    raise InputError("choose a shot first (draft the shot list, then pick a shot in the Shot menu)")


def blank_shots(board: list[dict[str, Any]]) -> list[str]:
    """Ids of shots without a prompt."""
    return [c["id"] for c in board if _blank(c.get("prompt"))]


def edit(board: Any, shot_id: str, field: str, value: Any) -> list[dict[str, Any]]:
    """The board with one field of one card changed (numbers checked)."""
    if field not in EDITABLE:
        raise InputError(f"{field} cannot be edited; editable: {', '.join(EDITABLE)}")
    board = normalized(board)
    card = find(board, shot_id)
    if field == "seed":
        value = _number(value, "seed", card["id"], int)
    elif field == "strength":
        value = _number(value, "strength", card["id"], float)
    elif field in _TEXT_LIMITS:
        value = check_text(value, f"{card['id']} {field}", _TEXT_LIMITS[field])
    elif field == "clip":
        value = str(value or "").strip() or "auto"
        parse_clip(value, card["id"])
        card["thumb"] = None
    card[field] = value
    return board


def move(board: Any, shot_id: str, delta: int) -> list[dict[str, Any]]:
    """The board with a card moved `delta` places (clamped)."""
    board = normalized(board)
    i = board.index(find(board, shot_id))
    j = min(max(i + delta, 0), len(board) - 1)
    board.insert(j, board.pop(i))
    return board


def delete(board: Any, shot_id: str) -> list[dict[str, Any]]:
    """The board without a card."""
    board = normalized(board)
    board.remove(find(board, shot_id))
    return board


def add(board: Any) -> list[dict[str, Any]]:
    """The board with a new empty card at the end (a fresh id)."""
    board = normalized(board)
    taken = {c["id"] for c in board}
    n = len(board) + 1
    while f"shot-{n:02d}" in taken:
        n += 1
    return [*board, new_shot(f"shot-{n:02d}")]


def add_take(board: Any, shot_id: str, take: dict[str, Any]) -> list[dict[str, Any]]:
    """The board with a new take of a shot, picked for stitching (earlier takes kept; a repeat is not added twice)."""
    board = normalized(board)
    card = find(board, shot_id)
    same = next((i for i, t in enumerate(card["takes"]) if t.get("video") == take.get("video")), None)
    if same is None:
        card["takes"].append(take)
        same = len(card["takes"]) - 1
    card["pick"] = same
    card["status"] = f"take {same + 1} of {len(card['takes'])}"
    return board


def pick(board: Any, shot_id: str, index: int) -> list[dict[str, Any]]:
    """The board with take `index` of a shot chosen for stitching."""
    board = normalized(board)
    card = find(board, shot_id)
    if not 0 <= int(index) < len(card["takes"]):
        raise InputError(f"{card['id']} has {len(card['takes'])} takes; pick one of them")
    card["pick"] = int(index)
    card["status"] = f"take {int(index) + 1} of {len(card['takes'])}"
    return board


def set_clip(board: Any, shot_id: str, name: str, start: float, end: Optional[float], thumb: Optional[str] = None) -> list[dict[str, Any]]:
    """The board with a shot's clip set to a span of a file."""
    board = normalized(board)
    card = find(board, shot_id)
    card["clip"] = f"{name}@{start:g}-{'' if end is None else f'{end:g}'}"
    card["thumb"] = thumb
    return board


def set_depth(board: Any, shot_id: str, ref: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The board with a shot using the clip span and depth settings tuned in Motion Structure."""
    board = set_clip(board, shot_id, name, float(ref["start"]), float(ref["end"]))
    card = find(board, shot_id)
    card["depth"] = {"estimator": ref["estimator"], "fit": ref["fit"], "speed": float(ref["speed"]), "smoothing": float(ref["smoothing"])}
    return board


def story_from_board(title: str, board: Any, settings: StorySettings, resolve: Callable[[str], str],
                     music: Optional[str] = None) -> Any:
    """The runnable Story of a board; every clip resolved with `resolve` (the visitor path guard in the app).

    Blank prompts are refused up front, naming the shots. (Stitching the picked takes goes through `picked_takes`.)
    """
    from aas_core.story import Character, ClipRef, Defaults, DepthSettings, GenerateSettings, Shot, Story
    from aas_core.story.schema import TOKEN, with_ids

    board = normalized(board)
    if not board:
        raise InputError("the shot list is empty: write the story and click 'Draft shot list' (or add a shot)")
    blank = blank_shots(board)
    if blank:
        raise InputError(f"write a prompt for {', '.join(blank)} first (or delete {'it' if len(blank) == 1 else 'them'})")
    shots = []
    for card in board:
        parsed = parse_clip(card["clip"], card["id"])
        clip: Any = "auto" if parsed is None else ClipRef(path=resolve(parsed[0]), start=parsed[1], end=parsed[2])
        strength = _number(card.get("strength"), "strength", card["id"], float)
        depth = card.get("depth")
        shots.append(Shot(
            id=card["id"], query=str(card.get("query") or ""), prompt=str(card["prompt"]), caption=str(card.get("caption") or ""),
            clip=clip, seed=_number(card.get("seed"), "seed", card["id"], int),
            generate=None if strength is None else GenerateSettings(strength=strength),
            depth=DepthSettings(estimator=depth.get("estimator"), options={k: v for k, v in depth.items() if k != "estimator" and v is not None})
            if depth else None,
        ))
    names = sorted({n for s in shots for n in TOKEN.findall(s.prompt)})
    return with_ids(Story(
        title=title or "",
        characters=[Character(name=n) for n in names],
        defaults=Defaults(
            generate=GenerateSettings(backend=settings.backend, width=settings.width, height=settings.height,
                                      frames=settings.frames, steps=settings.steps, preset=settings.preset),  # type: ignore[arg-type]
            depth=DepthSettings(estimator=settings.estimator), transition=settings.transition,
            transition_duration=float(settings.transition_s),
        ),
        output=output_of(settings, music),
        shots=shots,
    ))


def output_of(settings: StorySettings, music: Optional[str] = None) -> Any:
    """The story Output (title card, captions, music) of the Story settings; `music` already resolved."""
    from aas_core.story import Output

    return Output(title_card=bool(settings.title_card), captions=bool(settings.captions), music=music)


def picked_takes(board: Any, settings: StorySettings, resolve: Callable[[str], str], tiny: bool = False) -> list[Any]:
    """The picked take of every shot that has one, in board order, as `aas_core.story.assemble_takes` stitches them.

    Files are resolved with `resolve` (the visitor path guard in the app); caption and transition come from the
    card and the settings, the rest from the take itself.
    """
    from aas_core.story import Take

    takes = []
    for card in normalized(board):
        at = card["pick"]
        if at is None or not card["takes"]:
            continue
        if not isinstance(at, int) or not 0 <= at < len(card["takes"]):
            raise InputError(f"{card['id']} has {len(card['takes'])} takes; pick one of them")
        take = card["takes"][at]
        parsed = parse_clip(take.get("clip"), card["id"])
        takes.append(Take(
            shot=card["id"], number=at + 1, video=resolve(take["video"]) if take.get("video") else "",
            caption=str(card.get("caption") or ""), transition=settings.transition,
            transition_duration=float(settings.transition_s), prompt=str(take.get("prompt") or card["prompt"] or ""),
            comparison=resolve(take["comparison"]) if take.get("comparison") else "",
            metrics=take.get("metrics") if isinstance(take.get("metrics"), dict) else None,
            clip={} if parsed is None else {"path": parsed[0], "start": parsed[1], "end": parsed[2]}, tiny=tiny,
        ))
    if not takes:
        raise InputError("no shot has a take yet: generate at least one shot first")
    return takes


def take_of(card: dict[str, Any], settings: StorySettings, outcome: Any, show: Callable[[str], str], thumb: Optional[str]) -> dict[str, Any]:
    """A take record: the outcome's files (as the visitor sees them) and the exact settings that made it."""
    return {
        "video": show(outcome.video), "comparison": show(outcome.comparison) if outcome.comparison else None, "thumb": thumb,
        "seed": outcome.seed if getattr(outcome, "seed", None) is not None else card.get("seed"),
        "strength": card.get("strength"), "prompt": card["prompt"], "clip": card["clip"], "depth": card.get("depth"),
        "settings": {k: getattr(settings, k) for k in TAKE_SETTINGS}, "metrics": getattr(outcome, "metrics", None),
    }


def project_text(story_yaml: str, text: str, settings: StorySettings, board: list[dict[str, Any]]) -> str:
    """A project file: the story YAML (runnable by the CLI) under one comment line holding the app's own state."""
    state = {"text": text, "settings": settings.to_dict(),
             "takes": {c["id"]: {"takes": c["takes"], "pick": c["pick"], "thumb": c.get("thumb")} for c in board if c["takes"] or c.get("thumb")}}
    return APP_STATE_PREFIX + json.dumps(state, ensure_ascii=True, separators=(",", ":")) + "\n" + story_yaml


def app_state(project: str) -> dict[str, Any]:
    """The app state line of a project file ({} for story files written elsewhere)."""
    first = project.split("\n", 1)[0]
    if not first.startswith(APP_STATE_PREFIX):
        return {}
    try:
        state = json.loads(first[len(APP_STATE_PREFIX):])
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
