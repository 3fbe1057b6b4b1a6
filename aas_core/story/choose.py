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
CAPTION_STEP = 0.03
"""CLIP-scale score a caption-only hit (a web clip) gets over the best library hit the search ranked below it:
about the gap between neighbouring CLIP matches, so a web clip ranked first keeps its place unless its shape
is far off the output's."""
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


def _comparable_scores(hits: Sequence[dict[str, Any]]) -> list[float]:
    """Each hit's score on the CLIP scale the weights above assume.

    A caption-only hit (a web clip not downloaded yet) has no CLIP score; the search ranked it by its caption, so
    it scores CAPTION_STEP above the best hit ranked below it, never above a hit ranked above it. With no CLIP
    score anywhere (a caption-only library), the search's own scores are compared.
    """
    clip = [None if h.get("clip_score") is None else float(h["clip_score"]) for h in hits]
    if all(c is None for c in clip):
        return [float(h.get("score", 0.0)) for h in hits]
    out = []
    for i, score in enumerate(clip):
        above = [c for c in clip[:i] if c is not None]
        below = [c for c in clip[i + 1:] if c is not None]
        if score is None:
            score = max(below) + CAPTION_STEP if below else min(above) - CAPTION_STEP
            score = min([score, *above])
        out.append(score)
    return out


def _assess(need: Need, hit: dict[str, Any], pinned: Sequence[Span], score: float) -> tuple[Optional[str], float, list[str]]:
    """(why it does not fit or None, base fit, reasons it fits); `score` is the hit's comparable score."""
    remote = bool(hit.get("remote"))
    duration = float(hit["end"]) - float(hit["start"])
    if remote and duration <= 0:
        length = "length unknown until downloaded"  # a caption row without start/end: the whole web clip
    elif duration + 1e-6 < need.seconds:
        return f"too short: {duration:.2f} s for a {need.seconds:.2f} s shot", 0.0, []
    else:
        length = f"long enough: {duration:.2f} s for a {need.seconds:.2f} s shot"
    # The library's motion class (still/slow/fast) when it measured one; hits of older libraries have none.
    label, motion = hit.get("motion_class") or "", float(hit.get("motion") or 0.0)
    if label == "still":
        return f"still footage (motion {motion:.4f}): no movement to transfer", 0.0, []
    for span in pinned:
        if span.overlaps(_span(hit)):
            return f"footage pinned by {span.owner}", 0.0, []
    reasons = [f"match {score:.3f} for the query" + (" (ranked by its caption; a web clip, downloaded when chosen)" if remote else ""),
               length]
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
        n.id: [_assess(n, h, pinned, score) for h, score in zip(hits[n.id], _comparable_scores(hits[n.id]))] for n in needs
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
    """({shot id: the chosen hit + its query + `choice` (reasons)}, {shot id: why it has no clip}).

    A chosen web clip (a captioned URL) is downloaded into the library's remote cache and the choice made again
    with its real length and shape; one that cannot be downloaded gives way to the next candidate, and a shot
    left with none keeps the URL (the runner tries once more and fails that shot with the reason).
    """
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
    choices, failed = _choose_fetching([s.need for s in searched], candidates, pinned, library, on_progress)
    chosen = {}
    for shot in searched:
        choice = choices[shot.need.id]
        if choice.hit is None:
            problems[shot.need.id] = (f"retrieval found no clip for {shot.query!r} (min length {min_duration}s); "
                                      "index more clips or set `clip:` to a file")
            continue
        chosen[shot.need.id] = {**choice.hit, "query": shot.query, "choice": choice.to_dict()}
    return chosen, problems


def _choose_fetching(needs: Sequence[Need], candidates: Mapping[str, Sequence[dict[str, Any]]], pinned: Sequence[Span],
                     library: Optional[str], on_progress: Any = None) -> tuple[dict[str, Choice], dict[str, str]]:
    """`choose_clips`, with every chosen web clip downloaded (then chosen again, as a local clip) or dropped."""
    from aas_core import library as lib
    from aas_core.errors import InputError
    from aas_core.progress import report

    fetched: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    tried: dict[str, list[str]] = {}
    while True:
        usable = {sid: [fetched.get(_remote_key(h), h) for h in hits if _remote_key(h) not in failed]
                  for sid, hits in candidates.items()}
        choices = choose_clips(needs, usable, pinned)
        todo = {sid: c.hit for sid, c in choices.items() if c.hit is not None and c.hit.get("remote")}
        if not todo:
            break
        # Each round downloads or drops every chosen web clip, so the loop ends.
        for sid, hit in todo.items():
            key = _remote_key(hit)
            tried.setdefault(sid, []).append(key)
            if key in fetched or key in failed:
                continue
            report(on_progress, 0.99, f"downloading {lib.url_name(str(hit['path']))}")
            try:
                fetched[key] = lib.fetch_hit(hit, library)
            except InputError as exc:
                failed[key] = str(exc)
    for need in needs:
        _explain_downloads(choices[need.id], candidates.get(need.id, ()), failed, tried.get(need.id, []))
    return choices, failed


def _remote_key(hit: dict[str, Any]) -> str:
    """A web clip's identity (URL and caption span); '' for library clips."""
    return f"{hit['path']}|{hit['start']}|{hit['end']}" if hit.get("remote") else ""


def _explain_downloads(choice: Choice, hits: Sequence[dict[str, Any]], failed: Mapping[str, str], tried: Sequence[str]) -> None:
    """Say in the choice which web clips were downloaded or could not be; with nothing else left, keep the best of those."""
    lost = [h for h in hits if _remote_key(h) in failed]
    if choice.hit is not None and choice.hit.get("url"):
        choice.reasons.append(f"downloaded from {choice.hit['url']} (kept in the library's remote-cache)")
    if choice.hit is None and lost:
        # No local clip to fall back on: keep the web clip; the run tries it again and fails this shot with the reason.
        choice.hit, lost = lost[0], lost[1:]
        choice.reasons = [f"{failed[_remote_key(choice.hit)]}; no other candidate was left for this shot, so it fails "
                          "unless the download works when the shot runs"]
    elif choice.hit is not None:
        given_up = [h for h in lost if _remote_key(h) in tried]
        if given_up:
            names = ", ".join(dict.fromkeys(str(h["path"]) for h in given_up))
            choice.reasons.append(f"the next candidate: the web clip {names} chosen first could not be downloaded (see rejected)")
    choice.rejected += [_brief(h, failed[_remote_key(h)]) for h in lost]
