"""Video ladder benchmark: `render_renditions` beside the ffmpeg CLI doing the same work, same run.

The machine is shared, so besides wall time it prints CPU seconds (user + sys), which load from other
processes disturbs far less. The source, a 60 s 1080p30 testsrc2 clip with a sine tone, is generated once with the ffmpeg CLI and
cached in bench/out/. The anchor decodes once (skipping deblocking exactly when ours does: every rung
reduced >= 2x) and splits to three scaled outputs with the same x264 preset, bitrates, VBV, GOP and AAC
settings as `VideoSpec()`. Goals: ladder time <= 1.1x the CLI;
realtime factor per rung >= 5x (480p), 2x (720p), 1x (1080p), measured with each rung encoded alone
(in the ladder the rungs share one decode and one wall clock), each beside the CLI encoding that rung
alone with the same settings.

    uv run python bench/media_video.py [--seconds 60] [--ffmpeg /usr/bin/ffmpeg] [--ladder-only]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from hub_pipelines.media.video import (
    VideoSpec,
    decoder_skip_loop_filter,
    plan_ladder,
    render_renditions,
    rung_interpolation,
)

OUT = Path(__file__).parent / "out"
GOALS = {"480p": 5.0, "720p": 2.0, "1080p": 1.0}
CORES = os.cpu_count() or 1


def source_clip(ffmpeg: str, seconds: int) -> Path:
    path = OUT / f"testsrc2_1080p30_{seconds}s.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                "18",
                "-g",
                "60",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "192k",
                "-ac",
                "2",
                "-shortest",
                str(path),
            ],
            check=True,
        )
    return path


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], object]) -> tuple[float, float, float]:
    """Wall seconds, our CPU seconds and children's CPU seconds spent in run()."""
    wall, ours, children = (
        time.perf_counter(),
        cpu_seconds(resource.RUSAGE_SELF),
        cpu_seconds(resource.RUSAGE_CHILDREN),
    )
    run()
    return (
        time.perf_counter() - wall,
        cpu_seconds(resource.RUSAGE_SELF) - ours,
        cpu_seconds(resource.RUSAGE_CHILDREN) - children,
    )


def cli_ladder(ffmpeg: str, source: Path, out_dir: Path, spec: VideoSpec) -> None:
    """One decode, an fps filter and a split to one scale per rung, every rung encoded in the same run."""
    rungs = plan_ladder(1920, 1080, spec.ladder)
    gop = round(spec.keyframe_interval_seconds * 30)
    labels = [rung.label for rung, _, _ in rungs]
    graph = (
        f"[0:v]fps=30,split={len(rungs)}"
        + "".join(f"[in{label}]" for label in labels)
        + ";"
        + ";".join(
            f"[in{rung.label}]scale={width}:{height}:flags={rung_interpolation(spec, 1920 * 1080, width * height).lower()}"
            f"[v{rung.label}]"
            for rung, width, height in rungs
        )
    )
    skip_loop_filter = decoder_skip_loop_filter(
        spec, 1920 * 1080, [width * height for _, width, height in rungs]
    )
    command = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-y",
        "-skip_loop_filter",
        skip_loop_filter,
        "-i",
        str(source),
        "-filter_complex",
        graph,
    ]
    for rung, _, _ in rungs:
        command += [
            "-map",
            f"[v{rung.label}]",
            "-map",
            "0:a",
            "-c:v",
            "libx264",
            "-preset",
            spec.preset,
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            str(rung.video_bitrate),
            "-maxrate",
            str(int(rung.video_bitrate * spec.maxrate_factor)),
            "-bufsize",
            str(int(rung.video_bitrate * spec.bufsize_factor)),
            "-x264-params",
            f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
            "-c:a",
            "aac",
            "-b:a",
            str(spec.audio_bitrate),
            "-movflags",
            "+faststart",
            str(out_dir / f"{rung.label}.mp4"),
        ]
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--ffmpeg", default="/usr/bin/ffmpeg")
    parser.add_argument("--ladder-only", action="store_true", help="skip encoding each rung alone")
    args = parser.parse_args()
    if not shutil.which(args.ffmpeg):
        print(f"{args.ffmpeg} not found: apt-get install -y ffmpeg", file=sys.stderr)
        return 2
    spec = VideoSpec()
    source = source_clip(args.ffmpeg, args.seconds)
    cli_version = subprocess.run([args.ffmpeg, "-version"], capture_output=True, text=True).stdout.split(
        "\n"
    )[0]
    print(f"source: {source.name} ({source.stat().st_size / 1e6:.1f} MB, {args.seconds} s 1080p30)")
    print(f"anchor: {cli_version}; ours: PyAV {av.__version__} / FFmpeg {av.ffmpeg_version_info}")
    print(
        f"settings: x264 preset {spec.preset}, GOP {spec.keyframe_interval_seconds:g} s, AAC {spec.audio_bitrate}"
    )
    with tempfile.TemporaryDirectory() as cli_dir, tempfile.TemporaryDirectory() as our_dir:
        cli_wall, _, cli_cpu = timed(lambda: cli_ladder(args.ffmpeg, source, Path(cli_dir), spec))
        renditions = []
        our_wall, our_cpu, _ = timed(lambda: renditions.extend(render_renditions(source, our_dir, spec)))
        print(f"\n{'ladder (3 rungs)':18} {'wall s':>7} {'CPU s':>7} {'realtime':>8}")
        for who, wall, cpu in (("ffmpeg CLI", cli_wall, cli_cpu), ("render_renditions", our_wall, our_cpu)):
            print(f"{who:18} {wall:7.2f} {cpu:7.2f} {args.seconds / wall:7.2f}x")
        wall_ratio, cpu_ratio = our_wall / cli_wall, our_cpu / cli_cpu
        verdict = "met" if wall_ratio <= 1.1 else "MISSED"
        print(f"{'ratio ours/CLI':18} {wall_ratio:6.2f}x {cpu_ratio:6.2f}x   (goal <= 1.10x: {verdict})\n")
        print(f"{'rung':6} {'size':>10} {'MB ours':>8} {'MB CLI':>7}")
        for rendition in renditions:
            cli_bytes = (Path(cli_dir) / f"{rendition.label}.mp4").stat().st_size
            print(
                f"{rendition.label:6} {rendition.width:>4}x{rendition.height:<5} "
                f"{rendition.bytes / 1e6:8.1f} {cli_bytes / 1e6:7.1f}"
            )
    if not args.ladder_only:
        print(
            f"\n{'alone':6} {'CLI wall':>8} {'CLI CPU':>7} {'our wall':>8} {'our CPU':>7} {'wall x':>6} "
            f"{'CPU x':>5} {'realtime':>8} {'at 2 cores':>10} goal"
        )
        for rung in spec.ladder:
            alone = VideoSpec(ladder=(rung,))
            with tempfile.TemporaryDirectory() as cli_dir, tempfile.TemporaryDirectory() as our_dir:
                cli_wall, _, cli_cpu = timed(lambda: cli_ladder(args.ffmpeg, source, Path(cli_dir), alone))  # noqa: B023
                wall, cpu, _ = timed(lambda: render_renditions(source, our_dir, alone))  # noqa: B023
            goal = GOALS.get(rung.label, 0.0)
            verdict = "met" if args.seconds / wall >= goal else "MISSED"
            print(
                f"{rung.label:6} {cli_wall:8.2f} {cli_cpu:7.2f} {wall:8.2f} {cpu:7.2f} {wall / cli_wall:5.2f}x "
                f"{cpu / cli_cpu:4.2f}x {args.seconds / wall:7.2f}x {args.seconds / (cpu / CORES):9.2f}x "
                f">= {goal:g}x {verdict}"
            )
        print(
            f"'at {CORES} cores' is the realtime factor if the CPU seconds ran on {CORES} otherwise idle cores "
            "(an upper bound; the measured one shares the machine)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
