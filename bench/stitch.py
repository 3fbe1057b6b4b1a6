"""Stitching time: aas_core.stitch (moviepy 2.x) vs ffmpeg's own concat re-encode of the same shots.

    python bench/stitch.py [--shots 8] [--seconds 2] [--fps 24] [--size 512x512] [--repeat 3]

Shots are cut from ../shared/clips/bigbuckbunny.mp4 when present (real texture and motion), else
synthetic moving squares. Both sides encode libx264 preset medium crf 18 yuv420p +faststart with the
bundled ffmpeg (imageio_ffmpeg). Prints the best-of-N wall time of each and the ratio (target <= 1.5x).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aas_core.stitch import X264_PARAMS, StitchSettings, StitchShot, stitch  # noqa: E402
from aas_core.video_io import iter_frames, probe, write_video  # noqa: E402
from tests.helpers import SHARED_CLIPS, moving_square_frames  # noqa: E402


def make_shots(folder: Path, count: int, seconds: float, fps: float, size: tuple[int, int]) -> list[Path]:
    """`count` shot files of `seconds` each at `size` and `fps` (real footage when available)."""
    frames_per_shot = int(round(seconds * fps))
    source = SHARED_CLIPS / "bigbuckbunny.mp4"
    pool = [f.rgb for f in iter_frames(source, size=size)] if source.is_file() else []
    paths = []
    for i in range(count):
        if pool:
            start = (i * 17) % max(1, len(pool) - frames_per_shot)
            frames = np.stack([pool[(start + k) % len(pool)] for k in range(frames_per_shot)])
            if i % 2:
                frames = frames[:, :, ::-1]  # mirrored, so consecutive shots differ
        else:
            colour = ("red", "green", "blue", "yellow", "white")[i % 5]
            frames = moving_square_frames(colour, "right", frames_per_shot, size, square=size[1] // 4)
        paths.append(write_video(folder / f"shot{i:02d}.mp4", frames, fps))
    return paths


def ffmpeg_concat(paths: list[Path], out: Path, fps: float) -> None:
    """ffmpeg's concat demuxer, re-encoding to the same settings as the product."""
    import imageio_ffmpeg

    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for p in paths))
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-r", str(fps), "-c:v", "libx264", "-preset", "medium", "-crf", "18", *X264_PARAMS, str(out)],
        check=True,
    )


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_shots(folder, args.shots, args.seconds, args.fps, size)
        frames = sum(probe(p).frame_count for p in paths)
        plain = [StitchShot(str(p)) for p in paths]
        dressed = [StitchShot(str(p), caption=f"Shot {i + 1}: something happens here", transition=("crossfade", "fade_black")[i % 2])
                   for i, p in enumerate(paths)]
        runs = {
            "ffmpeg concat re-encode": lambda: ffmpeg_concat(paths, folder / "ffmpeg.mp4", args.fps),
            "stitch, cuts only": lambda: stitch(plain, folder / "cuts.mp4", StitchSettings(fps=args.fps, captions=False)),
            "stitch, captions + title + transitions": lambda: stitch(
                dressed, folder / "full.mp4", StitchSettings(fps=args.fps, title="A benchmark story")
            ),
        }
        results = {name: best(fn, args.repeat) for name, fn in runs.items()}
    base = results["ffmpeg concat re-encode"]
    source = "bigbuckbunny" if (SHARED_CLIPS / "bigbuckbunny.mp4").is_file() else "synthetic"
    print(f"{args.shots} shots x {args.seconds:g} s at {args.fps:g} fps, {size[0]}x{size[1]} ({frames} frames, {source}), best of {args.repeat}")
    print(f"{'method':<42} {'seconds':>8} {'vs ffmpeg':>10} {'frames/s':>9}")
    for name, seconds in results.items():
        print(f"{name:<42} {seconds:>8.2f} {seconds / base:>9.2f}x {frames / seconds:>9.1f}")


if __name__ == "__main__":
    main()
