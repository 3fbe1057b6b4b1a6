"""Clip choice for a whole story: every `clip: auto` shot gets a fitting hit, and no two shots share footage.

Per shot the library returns a few candidates; a candidate fits when it lasts at least as long as the
shot, is not still footage (when the library measured motion), and does not overlap a span a pinned
shot uses. Among fitting candidates the choice is greedy over all shots at once, best fit first, in the
manner of maximal marginal relevance: fit = similarity - aspect mismatch - a small penalty for each
shot already using another part of the same source file. A span taken by one shot is not given to
another; only when every fitting candidate of a shot is taken does it reuse one, and says so.
Each choice carries its reasons (and why better-scored candidates lost) for run.json and the UI.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

CANDIDATES = 8
"""Hits fetched per shot: enough alternatives for a story that keeps asking for similar motion."""
ASPECT_WEIGHT = 0.05
"""Fit lost per unit of |ln(clip aspect / output aspect)|: 16:9 footage for a square shot loses ~0.03,
about the gap between neighbouring CLIP matches, so shape decides only between near-equal matches."""
SAME_SOURCE_PENALTY = 0.02
"""Fit lost per shot already using another span of the same file (diversity across the story)."""
MIN_OVERLAP = 0.05
"""Seconds two spans of one file must share to count as the same footage (cut points jitter by a frame)."""


@dataclass
class Need:
    """What one `clip: auto` shot asks of its footage."""

    id: str
    seconds: float
    """The shot's length (frames / fps): the clip must last at least this long."""
    aspect: float
    """The output's width / height."""


@dataclass
class Span:
    """A stretch of a source file (end None = to the end of the file)."""

    path: str
    start: float
    end: Optional[float]
    owner: str = ""

    @property
    def file(self) -> str:
        """The source file as one spelling (absolute, ~ expanded), so two spellings of a path compare equal."""
        return os.path.abspath(os.path.expanduser(self.path))

    def overlaps(self, other: "Span") -> bool:
        """Whether the two spans share at least MIN_OVERLAP seconds of one file."""
        if self.file != other.file:
            return False
        a_end = math.inf if self.end is None else self.end
        b_end = math.inf if other.end is None else other.end
        return min(a_end, b_end) - max(self.start, other.start) >= MIN_OVERLAP


@dataclass
class Choice:
    """The clip chosen for one shot and why (field names are read by run.json consumers and the UI)."""

    id: str
    hit: Optional[dict[str, Any]]
    """The chosen search hit (ClipHit.to_dict() form), or None when the search found nothing."""
    fit: float = 0.0
    reasons: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """Candidates not taken: {path, start, end, score, why}."""
    reused: bool = False
    """True when the shot had to share footage with another shot (no unused candidate fitted)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the hit (the runner records the hit itself)."""
        return {"fit": round(self.fit, 4), "reasons": self.reasons, "rejected": self.rejected, "reused": self.reused}


def _as_dict(hit: Any) -> dict[str, Any]:
    if isinstance(hit, dict):
        return dict(hit)
    return hit.to_dict() if hasattr(hit, "to_dict") else dataclasses.asdict(hit)


def _span(hit: dict[str, Any], owner: str = "") -> Span:
    return Span(str(hit["path"]), float(hit["start"]), float(hit["end"]), owner)


def _aspect(hit: dict[str, Any]) -> Optional[float]:
    width, height = hit.get("width") or 0, hit.get("height") or 0
    return width / height if width > 0 and height > 0 else None


def _assess(need: Need, hit: dict[str, Any], pinned: Sequence[Span]) -> tuple[Optional[str], float, list[str]]:
    """(why it does not fit or None, base fit, reasons it fits)."""
    if hit.get("remote"):
        return "a captioned web video not downloaded yet (aas_core.library.fetch_remote fetches it)", 0.0, []
    duration = float(hit["end"]) - float(hit["start"])
    if duration + 1e-6 < need.seconds:
        return f"too short: {duration:.2f} s for a {need.seconds:.2f} s shot", 0.0, []
    # The library's motion class (still/slow/fast) when it measured one; hits of older libraries have none.
    label, motion = hit.get("motion_class") or "", float(hit.get("motion") or 0.0)
    if label == "still":
        return f"still footage (motion {motion:.4f}): no movement to transfer", 0.0, []
    for span in pinned:
        if span.overlaps(_span(hit)):
            return f"footage pinned by {span.owner}", 0.0, []
    # The CLIP cosine, on the scale the weights above assume; a fused (caption) rank score only when there is none.
    score = float(hit["clip_score"] if hit.get("clip_score") is not None else hit.get("score", 0.0))
    reasons = [f"match {score:.3f} for the query", f"long enough: {duration:.2f} s for a {need.seconds:.2f} s shot"]
    fit = score
    aspect = _aspect(hit)
    if aspect is not None:
        mismatch = abs(math.log(aspect / need.aspect))
        fit -= ASPECT_WEIGHT * mismatch
        reasons.append(f"aspect {aspect:.2f} for a {need.aspect:.2f} output" + (" (same shape)" if mismatch < 0.05 else ""))
    if label:
        reasons.append(f"{label} motion ({motion:.3f} frame widths/s)")
    return None, fit, reasons


def _brief(hit: dict[str, Any], why: str) -> dict[str, Any]:
    return {"path": hit["path"], "start": hit["start"], "end": hit["end"], "score": hit.get("score"), "why": why}


def choose_clips(
    needs: Sequence[Need],
    candidates: Mapping[str, Sequence[Any]],
    pinned: Sequence[Span] = (),
) -> dict[str, Choice]:
    """Pick one candidate per need, for all needs together: fitting, diverse, no footage shared unless unavoidable."""
    # 1. Assess every candidate of every shot against that shot's needs.
    hits = {n.id: [_as_dict(h) for h in candidates.get(n.id, ())] for n in needs}
    assessed: dict[str, list[tuple[Optional[str], float, list[str]]]] = {
        n.id: [_assess(n, h, pinned) for h in hits[n.id]] for n in needs
    }
    # 2. Greedy over all shots at once: the best remaining (shot, candidate) pair, diversity-adjusted, each round.
    spans = {n.id: [_span(h) for h in hits[n.id]] for n in needs}
    by_file: dict[str, list[Span]] = {}
    taken: list[Span] = []
    chosen: dict[str, tuple[int, float, list[str]]] = {}
    while True:
        best: Optional[tuple[float, str, int, list[str]]] = None
        for need in needs:
            if need.id in chosen:
                continue
            for k, (why, fit, reasons) in enumerate(assessed[need.id]):
                span = spans[need.id][k]
                same_file = by_file.get(span.file, [])
                if why is not None or any(t.overlaps(span) for t in same_file):
                    continue
                adjusted = fit - SAME_SOURCE_PENALTY * len(same_file)
                if best is None or adjusted > best[0]:
                    sharing = ", ".join(t.owner for t in same_file)
                    best = (adjusted, need.id, k, reasons + ([f"same source file as {sharing}, another part of it"] if same_file else []))
        if best is None:
            break
        adjusted, shot_id, k, reasons = best
        chosen[shot_id] = (k, adjusted, reasons)
        span = dataclasses.replace(spans[shot_id][k], owner=shot_id)
        taken.append(span)
        by_file.setdefault(span.file, []).append(span)
    # 3. Shots left over reuse a fitting clip (or, with none fitting, take the best match) and say so.
    out: dict[str, Choice] = {}
    for need in needs:
        options = hits[need.id]
        if not options:
            out[need.id] = Choice(need.id, None, reasons=["the search found no clip for this shot"])
            continue
        if need.id in chosen:
            k, fit, reasons = chosen[need.id]
            choice = Choice(need.id, options[k], fit=fit, reasons=reasons)
        else:
            fitting = [k for k, a in enumerate(assessed[need.id]) if a[0] is None]
            if fitting:
                k = max(fitting, key=lambda i: assessed[need.id][i][1])
                users = [t.owner for t in taken if t.overlaps(_span(options[k]))]
                reasons = [*assessed[need.id][k][2], (f"reused: every fitting clip is already used ({', '.join(users)}); "
                                                      "index more footage or pin a clip for variety")]
                choice = Choice(need.id, options[k], fit=assessed[need.id][k][1], reasons=reasons, reused=True)
            else:
                k = max(range(len(options)), key=lambda i: float(options[i].get("score", 0.0)))
                reasons = [("no candidate fits (see rejected); took the best match anyway: "
                            "index longer or moving footage, lower the shot's frames, or pin a clip")]
                choice = Choice(need.id, options[k], fit=float(options[k].get("score", 0.0)), reasons=reasons,
                                reused=any(t.overlaps(_span(options[k])) for t in taken))
        for i, hit in enumerate(options):
            if i == k:
                continue
            why = assessed[need.id][i][0]
            if why is None:
                users = [t.owner for t in taken if t.owner != need.id and t.overlaps(_span(hit))]
                why = f"already used by {', '.join(users)}" if users else "lower fit than the chosen clip"
            choice.rejected.append(_brief(hit, why))
        out[need.id] = choice
    return out


# --- for a story run: search every `clip: auto` shot's candidates (cached in the run folder), then choose ---


@dataclass
class AutoShot:
    """A `clip: auto` shot as the runner hands it over: its id, retrieval text and needs."""

    need: Need
    query: str


def search_candidates(
    query: str,
    library: Optional[str],
    out_dir: Path,
    min_duration: float = 0.0,
    weights_root: Optional[str] = None,
    runtime: Any = None,
    k: int = CANDIDATES,
) -> list[dict[str, Any]]:
    """The library's top `k` hits for a query (ClipHit.to_dict() form), cached in the run folder per library state."""
    from aas_core import library as lib
    from aas_core.fsutil import atomic_write_json, json_digest
    from aas_core.story.outcome import CACHE_VERSION, read_json

    info = lib.library_info(library)
    # Files and shots counted too: adding clips to a library keeps its creation time.
    key = json_digest({"v": CACHE_VERSION, "q": query, "k": k, "lib": info.library, "created": info.created,
                       "files": info.files, "shots": info.shots, "min": min_duration})
    cached = out_dir / "cache" / "retrieval" / f"{key}.json"
    data = read_json(cached)
    if data is not None and isinstance(data.get("hits"), list):
        return data["hits"]
    hits = [_as_dict(h) for h in lib.search(query, k=k, library=library, min_duration=min_duration, weights_root=weights_root, runtime=runtime)]
    atomic_write_json(cached, {"query": query, "hits": hits})
    return hits


def choose_story_clips(
    shots: Sequence[AutoShot],
    pinned: Sequence[Span],
    library: Optional[str],
    out_dir: Path,
    min_duration: float = 0.0,
    weights_root: Optional[str] = None,
    runtime: Any = None,
    on_progress: Any = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({shot id: the chosen hit + its query + `choice` (reasons)}, {shot id: why it has no clip})."""
    from aas_core.errors import InputError
    from aas_core.progress import report

    candidates: dict[str, list[dict[str, Any]]] = {}
    problems: dict[str, str] = {}
    for i, shot in enumerate(shots):
        report(on_progress, i / max(len(shots), 1), f"finding clips for {shot.need.id}")
        try:
            candidates[shot.need.id] = search_candidates(shot.query, library, out_dir, min_duration, weights_root, runtime)
        except InputError as exc:
            problems[shot.need.id] = f"retrieval: {exc}"
    searched = [s for s in shots if s.need.id in candidates]
    choices = choose_clips([s.need for s in searched], candidates, pinned)
    chosen = {}
    for shot in searched:
        choice = choices[shot.need.id]
        if choice.hit is None:
            problems[shot.need.id] = (f"retrieval found no clip for {shot.query!r} (min length {min_duration}s); "
                                      "index more clips or set `clip:` to a file")
            continue
        chosen[shot.need.id] = {**choice.hit, "query": shot.query, "choice": choice.to_dict()}
    return chosen, problems
