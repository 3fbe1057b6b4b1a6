"""The story report: `story_report.json` (machine), `.md` and `.html` (people), next to the video."""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any, Optional

from aas_core.fsutil import atomic_write_bytes, atomic_write_json
from aas_core.story.outcome import REPORT_HTML, REPORT_JSON, REPORT_MD, StoryRun

METRIC_NAMES: tuple[str, ...] = ("clip_text_similarity", "frame_consistency", "depth_adherence", "character_identity")
METRIC_LABELS = {
    "clip_text_similarity": "CLIP text-video",
    "frame_consistency": "frame consistency",
    "depth_adherence": "depth adherence",
    "character_identity": "character identity",
}


def _mean(values: list[float]) -> Optional[float]:
    return round(sum(values) / len(values), 4) if values else None


def build_report(run_data: dict[str, Any], run: StoryRun) -> dict[str, Any]:
    """The report as a JSON-ready dict: per-shot status, clip, metrics, files; means over shots."""
    shots = []
    for o in run.shots:
        metrics = o.metrics or {}
        shots.append({
            "id": o.id, "status": o.status, "prompt": o.prompt, "caption": o.caption, "clip": o.clip,
            "video": o.video, "comparison": o.comparison, "params": str(Path(o.folder) / "params.json") if o.folder else "",
            "seconds": o.seconds, "error": o.error, "tiny": o.tiny,
            "metrics": {k: metrics.get(k) for k in METRIC_NAMES} if metrics and "error" not in metrics else {},
            "metrics_error": metrics.get("error", "") if metrics else "",
            "metric_models": metrics.get("models", {}) if metrics else {},
        })
    summary = {}
    for name in METRIC_NAMES:
        summary[name] = _mean([s["metrics"][name] for s in shots if s["metrics"].get(name) is not None])
    counts = {status: sum(1 for s in shots if s["status"] == status) for status in ("generated", "cached", "failed", "skipped")}
    return {
        "title": run_data.get("title", ""),
        "video": run.video,
        "duration": round(run.duration, 3),
        "storyboard": run.storyboard,
        "fps": run_data.get("fps"),
        "counts": counts,
        "preview": any(s["tiny"] for s in shots),
        "metrics_mean": summary,
        "shots": shots,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rel(path: Optional[str], base: Path) -> str:
    if not path:
        return ""
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return path


def report_markdown(report: dict[str, Any], base: Path) -> str:
    """The report as Markdown."""
    lines = [f"# {report['title'] or 'Story'}", ""]
    if report["preview"]:
        lines += ["> Made with tiny random-weight models: a workflow preview, not a real result.", ""]
    c = report["counts"]
    lines += [
        f"Video: `{_rel(report['video'], base) or 'none'}` ({report['duration']:.2f} s at {report['fps']} fps); "
        f"storyboard: `{_rel(report['storyboard'], base) or 'none'}`.",
        f"Shots: {c['generated']} generated, {c['cached']} reused, {c['failed']} failed, {c['skipped']} skipped.",
        "",
        "| shot | status | " + " | ".join(METRIC_LABELS[m] for m in METRIC_NAMES) + " | clip | prompt |",
        "|---|---|" + "---:|" * len(METRIC_NAMES) + "---|---|",
    ]
    for s in report["shots"]:
        clip = s["clip"]
        span = f"{Path(clip.get('path', '')).name} {clip.get('start', 0):.2f}-{clip.get('end') or 0:.2f}s" if clip else ""
        cells = [_fmt(s["metrics"].get(m)) for m in METRIC_NAMES]
        lines.append(f"| {s['id']} | {s['status']} | " + " | ".join(cells) + f" | {span} | {s['prompt'].replace('|', '/')} |")
    mean = report["metrics_mean"]
    lines.append("| **mean** | | " + " | ".join(_fmt(mean[m]) for m in METRIC_NAMES) + " | | |")
    errors = [s for s in report["shots"] if s["error"] or s["metrics_error"]]
    if errors:
        lines += ["", "## Problems", ""]
        lines += [f"- {s['id']}: {s['error'] or 'metrics: ' + s['metrics_error']}" for s in errors]
    lines += [
        "",
        "CLIP text-video: mean cosine of prompt and frames; frame consistency: mean cosine of consecutive frames; "
        "depth adherence: mean per-frame correlation of the conditioning depth and depth estimated on the result; "
        "character identity: mean cosine of concept photos and frames. All in [-1, 1], higher is better.",
        "",
    ]
    return "\n".join(lines)


def report_html(report: dict[str, Any], base: Path) -> str:
    """The report as a self-contained HTML page (video, storyboard, per-shot comparisons)."""
    e = html.escape
    rows = []
    for s in report["shots"]:
        cells = "".join(f"<td>{_fmt(s['metrics'].get(m))}</td>" for m in METRIC_NAMES)
        media = f'<video src="{e(_rel(s["comparison"], base))}" controls muted loop width="360"></video>' if s["comparison"] else e(s["error"])
        rows.append(f"<tr><td>{e(s['id'])}</td><td>{e(s['status'])}</td>{cells}<td>{e(s['prompt'])}</td><td>{media}</td></tr>")
    head = "".join(f"<th>{e(METRIC_LABELS[m])}</th>" for m in METRIC_NAMES)
    mean = "".join(f"<td><b>{_fmt(report['metrics_mean'][m])}</b></td>" for m in METRIC_NAMES)
    video = f'<video src="{e(_rel(report["video"], base))}" controls width="640"></video>' if report["video"] else "<p>No video yet.</p>"
    board = f'<p><img src="{e(_rel(report["storyboard"], base))}" style="max-width:100%"></p>' if report["storyboard"] else ""
    preview = "<p><b>Preview made with tiny random-weight models.</b></p>" if report["preview"] else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(report['title'] or 'Story')}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px}table{border-collapse:collapse}</style>"
        f"</head><body><h1>{e(report['title'] or 'Story')}</h1>{preview}{video}{board}"
        f"<table><tr><th>shot</th><th>status</th>{head}<th>prompt</th><th>source | depth | generated</th></tr>"
        + "".join(rows)
        + f"<tr><td>mean</td><td></td>{mean}<td></td><td></td></tr></table></body></html>\n"
    )


def write_reports(out_dir: Path, run_data: dict[str, Any], run: StoryRun) -> tuple[Path, Path, Path]:
    """Write story_report.json/.md/.html into the run folder (each atomically)."""
    report = build_report(run_data, run)
    atomic_write_json(out_dir / REPORT_JSON, report)
    atomic_write_bytes(out_dir / REPORT_MD, report_markdown(report, out_dir).encode("utf-8"))
    atomic_write_bytes(out_dir / REPORT_HTML, report_html(report, out_dir).encode("utf-8"))
    return out_dir / REPORT_JSON, out_dir / REPORT_MD, out_dir / REPORT_HTML
