"""Video renditions with PyAV: H.264 + AAC MP4 ladders that stream well.

Decisions a reader needs:
- Rotation metadata (a phone's display matrix) is applied to the pixels: frames are turned upright
  before scaling and the outputs carry no display matrix. Every player, thumbnailer and segmenter then
  agrees on the picture, and rung sizes are computed on the upright frame.
- A rung's height means the frame's short side, so a portrait 1080x1920 video gets a 480x854 "480p".
- The source is decoded once; each decoded frame is scaled for every rung and fed to that rung's
  encoder. Every rung scales, encodes and muxes on a thread of its own (PyAV releases the GIL in
  swscale and the codecs), so the rungs and the decoder keep all cores busy. Output is constant
  frame rate (variable-rate input is resampled like ffmpeg's fps filter) with a keyframe exactly
  every `keyframe_interval_seconds` and no scene-cut keyframes, so segments of different rungs align.
  The moov atom is written at the front (fast start). The audio is encoded once and the same AAC
  packets are muxed into every rung.

Probing, limits, uprighting and the constant-rate clock live in `video_probe`, thumbnails and
posters in `video_stills`; their public names are re-exported here so callers import the video
domain from one place.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from hub_pipelines.media.video_probe import (
    ConstantRate,
    Uprighter,
    VideoInfo,
    VideoLimits,
    VideoRejected,
    decode_frames,
    even,
    first_video_stream,
    open_input,
    output_rate,
    probe_video,
    source_name,
)
from hub_pipelines.media.video_stills import Stills, extract_poster, extract_stills, extract_thumbnail

__all__ = [
    "DEFAULT_LADDER",
    "Rendition",
    "Rung",
    "Stills",
    "VideoInfo",
    "VideoLimits",
    "VideoRejected",
    "VideoSpec",
    "decoder_skip_loop_filter",
    "extract_poster",
    "extract_stills",
    "extract_thumbnail",
    "plan_ladder",
    "probe_video",
    "render_renditions",
]

_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000)
_MIN_BITRATE = 200_000
_QUEUED_ITEMS = 8
SKIP_LOOP_FILTER_LEVELS = ("default", "none", "noref", "bidir", "nointra", "nokey", "all")


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: the output's short side in pixels and its video bitrate target."""

    label: str
    height: int
    video_bitrate: int


DEFAULT_LADDER = (
    Rung("480p", 480, 1_000_000),
    Rung("720p", 720, 2_500_000),
    Rung("1080p", 1080, 5_000_000),
)


@dataclass(frozen=True)
class VideoSpec:
    """How renditions are encoded. Bitrates are capped at `maxrate_factor` x the target (VBV)."""

    ladder: Sequence[Rung] = DEFAULT_LADDER
    preset: str = "veryfast"
    keyframe_interval_seconds: float = 2.0
    max_fps: int = 60
    audio_bitrate: int = 128_000
    maxrate_factor: float = 1.5
    bufsize_factor: float = 2.0
    interpolation: str = "BICUBIC"
    # Area averaging for rungs at least this many times smaller than the source (480p from 1080p):
    # measured on the 480p rung of a 1080p clip it costs 18% less CPU than bicubic for an SSIM 0.001
    # lower after encoding, and it is the filter that does not alias on large reductions.
    large_reduction_interpolation: str = "AREA"
    large_reduction_factor: float = 2.0
    # The decoder's skip_loop_filter when every rung is a large reduction (480p alone from 1080p);
    # "default" deblocks as usual. The area averaging blurs most of what deblocking smooths, and H.264
    # decoding is ~45% of the 480p rung's CPU. Measured on the bench's 60 s 1080p30 clip, 480p alone:
    # decoding 9-11% cheaper, the rung ~5% (about 1.1 of 24.8 CPU-s); output SSIM 0.99378 -> 0.99365
    # and PSNR-Y -0.14 dB against the properly decoded source; on a noisy 1080p source at 3 Mbps
    # (strong deblocking) SSIM -0.0006, PSNR-Y -0.38 dB. "bidir" costs ~0.01 dB there but saves
    # half as much, not enough for 5x realtime on 2 cores.
    large_reduction_skip_loop_filter: str = "all"
    # ...and only as far as that cost was measured: 480p from 1080p is a 2.25x reduction of each side.
    # A 4K upload's 1080p rung (2x) keeps the decoder's deblocking, and with it that upload's whole ladder.
    skip_loop_filter_min_reduction: float = 2.2
    limits: VideoLimits = field(default_factory=VideoLimits)

    def __post_init__(self) -> None:
        if self.large_reduction_skip_loop_filter not in SKIP_LOOP_FILTER_LEVELS:
            raise ValueError(
                f"large_reduction_skip_loop_filter {self.large_reduction_skip_loop_filter!r} "
                f"is not one of {', '.join(SKIP_LOOP_FILTER_LEVELS)}"
            )


@dataclass(frozen=True)
class Rendition:
    """One encoded rung. Rungs are encoded together from one decode, so encode_seconds is the wall time
    of the whole ladder pass (decode included) and realtime_factor is media seconds per wall second."""

    label: str
    path: Path
    width: int
    height: int
    video_bitrate: int
    bytes: int
    encode_seconds: float
    duration_seconds: float

    @property
    def realtime_factor(self) -> float:
        return self.duration_seconds / self.encode_seconds if self.encode_seconds else math.inf


def render_renditions(
    source_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spec: VideoSpec | None = None,
    *,
    name: str | None = None,
) -> list[Rendition]:
    """Encode every ladder rung that fits the source into `out_dir/<label>.mp4`, decoding once.

    `name` is what rejections call the input (the upload's key); by default the file's name."""
    spec = spec or VideoSpec()
    name = name or source_name(source_path)
    info = probe_video(source_path, limits=spec.limits, name=name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    planned = plan_ladder(info.width, info.height, spec.ladder)
    skip_loop_filter = decoder_skip_loop_filter(
        spec, info.width * info.height, [width * height for _, width, height in planned]
    )
    started = time.perf_counter()
    with open_input(source_path, name, skip_loop_filter=skip_loop_filter) as container:
        video = first_video_stream(container, name)
        audio = container.streams.audio[0] if container.streams.audio else None
        rate = output_rate(video, spec.max_fps)
        shared_audio = _SharedAudio(audio, video, spec.audio_bitrate) if audio is not None else None
        scale_lock = threading.Lock()
        encoders: list[_RungEncoder] = []
        try:
            for rung, width, height in planned:
                path = out / f"{rung.label}.mp4"
                interpolation = rung_interpolation(spec, info.width * info.height, width * height)
                encoders.append(
                    _RungEncoder(
                        path, rung, width, height, rate, shared_audio, spec, interpolation, scale_lock
                    )
                )
            last_time = _transcode(
                container, name, video, audio, info, spec.limits, rate, encoders, shared_audio
            )
        except BaseException:
            for encoder in encoders:
                encoder.abandon()
            raise
    duration = float(last_time)
    # A cut-off file whose index survived (moov at the front) decodes cleanly but stops early.
    if info.duration_seconds and duration < 0.98 * info.duration_seconds - 2 / rate:
        for encoder in encoders:
            encoder.path.unlink(missing_ok=True)
        raise VideoRejected(
            name, f"truncated: video ends at {duration:.2f} s of a declared {info.duration_seconds:.2f} s"
        )
    wall = time.perf_counter() - started
    return [encoder.rendition(duration, wall) for encoder in encoders]


def rung_interpolation(spec: VideoSpec, source_pixels: int, rung_pixels: int) -> str:
    if _large_reduction(spec, source_pixels, rung_pixels):
        return spec.large_reduction_interpolation
    return spec.interpolation


def decoder_skip_loop_filter(spec: VideoSpec, source_pixels: int, rung_pixels: Sequence[int]) -> str:
    """The source decoder's skip_loop_filter: the rungs share one decode, so deblocking is skipped only
    when every rung is reduced at least `skip_loop_filter_min_reduction` times on each side."""
    minimum = spec.skip_loop_filter_min_reduction
    if rung_pixels and all(_linear_reduction(source_pixels, pixels) >= minimum for pixels in rung_pixels):
        return spec.large_reduction_skip_loop_filter
    return "default"


def _large_reduction(spec: VideoSpec, source_pixels: int, rung_pixels: int) -> bool:
    return _linear_reduction(source_pixels, rung_pixels) >= spec.large_reduction_factor


def _linear_reduction(source_pixels: int, rung_pixels: int) -> float:
    # Rungs keep the source's aspect ratio, so the pixel ratio's root is the reduction of each side.
    return math.sqrt(source_pixels / rung_pixels)


def plan_ladder(width: int, height: int, ladder: Sequence[Rung]) -> list[tuple[Rung, int, int]]:
    """The rungs (with even output sizes) for an upright width x height source; never upscales."""
    short, long = min(width, height), max(width, height)
    rungs = sorted(ladder, key=lambda rung: rung.height)
    fitting = [rung for rung in rungs if rung.height <= short]
    if not fitting:
        lowest = rungs[0]
        bitrate = max(_MIN_BITRATE, round(lowest.video_bitrate * (short / lowest.height) ** 2))
        fitting = [Rung(f"{short - short % 2}p", short - short % 2, bitrate)]
    planned = []
    for rung in fitting:
        scaled_long = (
            long - long % 2 if rung.height == short - short % 2 else even(long * rung.height / short)
        )
        size = (rung.height, scaled_long) if width <= height else (scaled_long, rung.height)
        planned.append((rung, *size))
    return planned


class _RungEncoder:
    """One rung's scaler, H.264 encoder and MP4 muxer, run on a thread of its own so the rungs encode
    in parallel with each other and with decoding (PyAV releases the GIL in swscale and the codecs).
    The AAC packets come from `_SharedAudio`."""

    def __init__(
        self,
        path: Path,
        rung: Rung,
        width: int,
        height: int,
        rate: Fraction,
        audio: _SharedAudio | None,
        spec: VideoSpec,
        interpolation: str,
        scale_lock: threading.Lock,
    ) -> None:
        self.path, self.rung, self.width, self.height = path, rung, width, height
        self._interpolation = interpolation
        self._scaler = VideoReformatter()
        self._scale_lock = scale_lock
        self._time_base = 1 / rate
        self._container: OutputContainer = av.open(
            str(path), "w", format="mp4", options={"movflags": "+faststart"}
        )
        gop = max(1, round(spec.keyframe_interval_seconds * rate))
        self._video = self._container.add_stream(
            "libx264",
            rate=rate,
            options={
                "preset": spec.preset,
                "profile": "high",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
                "maxrate": str(int(rung.video_bitrate * spec.maxrate_factor)),
                "bufsize": str(int(rung.video_bitrate * spec.bufsize_factor)),
            },
        )
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        context = self._video.codec_context
        context.bit_rate = rung.video_bitrate
        # PyAV defaults to slice threads, which x264 turns into sliced threading; the ffmpeg CLI's
        # default (frame threads) is faster for throughput.
        context.thread_type = "AUTO"
        context.thread_count = 0
        self._audio: AudioStream | None = None
        if audio is not None:
            # Never fed: opened with the shared encoder's settings, it gives the track the same
            # codec parameters (AudioSpecificConfig, priming) as the packets muxed into it.
            self._audio = self._container.add_stream("aac", rate=audio.rate, layout=audio.layout)
            self._audio.codec_context.bit_rate = audio.bitrate
        # Bounded so a slow rung holds the decoder back instead of piling up decoded frames.
        self._inbox: queue.Queue[tuple[VideoFrame, int] | list[Packet] | None] = queue.Queue(_QUEUED_ITEMS)
        self._error: BaseException | None = None
        self._abandoned = self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"encode-{rung.label}", daemon=True)
        self._thread.start()

    def send_video(self, frame: VideoFrame, pts: int) -> None:
        self._send((frame, pts))

    def send_audio(self, packets: list[Packet]) -> None:
        if self._audio is not None and packets:
            self._send([_copy_packet(packet) for packet in packets])

    def finish(self) -> None:
        """Flush the encoder and write the file; re-raises what failed on the rung's thread."""
        self._inbox.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        self._abandoned = True
        if self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join()
        if not self._closed:
            with contextlib.suppress(av.error.FFmpegError):
                self._container.close()
        self.path.unlink(missing_ok=True)

    def rendition(self, duration: float, wall_seconds: float) -> Rendition:
        return Rendition(
            label=self.rung.label,
            path=self.path,
            width=self.width,
            height=self.height,
            video_bitrate=self.rung.video_bitrate,
            bytes=self.path.stat().st_size,
            encode_seconds=wall_seconds,
            duration_seconds=duration,
        )

    def _send(self, item: tuple[VideoFrame, int] | list[Packet]) -> None:
        if self._error is not None:
            raise self._error
        self._inbox.put(item)

    def _run(self) -> None:
        # Keeps draining after a failure so the decoding thread never blocks on a full inbox.
        while (item := self._inbox.get()) is not None:
            if self._error is None:
                try:
                    if isinstance(item, list):
                        self._mux_audio(item)
                    else:
                        self._encode_video(*item)
                except BaseException as error:
                    self._error = error
        if self._error is None and not self._abandoned:
            try:
                self._container.mux(self._video.encode(None))
                self._container.close()
                self._closed = True
            except BaseException as error:
                self._error = error

    def _encode_video(self, frame: VideoFrame, pts: int) -> None:
        # The decoded frame is shared by every rung and reformat briefly rewrites its colour tags.
        with self._scale_lock:
            scaled = self._scaler.reformat(
                frame, self.width, self.height, "yuv420p", interpolation=self._interpolation, threads=0
            )
        scaled.pts, scaled.time_base = pts, self._time_base
        self._container.mux(self._video.encode(scaled))

    def _mux_audio(self, packets: list[Packet]) -> None:
        assert self._audio is not None
        for packet in packets:
            packet.stream = self._audio
            self._container.mux_one(packet)


def _copy_packet(packet: Packet) -> Packet:
    """A rung's own copy of a shared AAC packet: muxing rewrites a packet's stream and timestamps."""
    copy = Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.time_base, copy.is_keyframe = packet.time_base, packet.is_keyframe
    return copy


def _transcode(
    container: InputContainer,
    name: str,
    video: VideoStream,
    audio: AudioStream | None,
    info: VideoInfo,
    limits: VideoLimits,
    rate: Fraction,
    encoders: list[_RungEncoder],
    shared_audio: _SharedAudio | None,
) -> Fraction:
    """Feed every decoded frame to every encoder; return where the video ends, in seconds.

    The limits are held again on what is decoded, not only on what the header declared: a container
    may declare no duration (a live-written Matroska file) or a small size, and a timestamp jump is
    filled with repeated frames, so a few bytes could otherwise make hours of output."""
    upright = Uprighter(info.rotation)
    constant = ConstantRate(rate)
    last_tick = limits.max_duration_seconds * rate
    for frame in decode_frames(container, name, video, audio):
        if isinstance(frame, VideoFrame):
            if frame.width * frame.height > limits.max_pixels:
                raise VideoRejected(
                    name,
                    f"a frame of {frame.width}x{frame.height} exceeds the limit of {limits.max_pixels} "
                    f"pixels (the header declared {info.width}x{info.height})",
                )
            for ready, pts in constant.push(upright(frame)):
                if pts > last_tick:
                    raise VideoRejected(
                        name,
                        f"runs past the limit of {limits.max_duration_seconds:g} s "
                        f"(the header declared {info.duration_seconds:.1f} s)",
                    )
                for encoder in encoders:
                    encoder.send_video(ready, pts)
        elif shared_audio is not None:
            packets = shared_audio.encode(frame)
            for encoder in encoders:
                encoder.send_audio(packets)
    for ready, pts in constant.finish():
        for encoder in encoders:
            encoder.send_video(ready, pts)
    if shared_audio is not None:
        packets = shared_audio.encode(None)
        for encoder in encoders:
            encoder.send_audio(packets)
    for encoder in encoders:
        encoder.finish()
    return constant.emitted / rate


class _SharedAudio:
    """Resamples and encodes the audio once; every rung muxes the same AAC packets."""

    def __init__(self, audio: AudioStream, video: VideoStream, bitrate: int) -> None:
        self.rate = audio.rate if audio.rate in _AAC_RATES else 48000
        self.layout = "mono" if audio.layout.nb_channels == 1 else "stereo"
        self.bitrate = bitrate
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self._encoder = av.CodecContext.create("aac", "w")
        assert isinstance(self._encoder, AudioCodecContext)
        self._encoder.sample_rate, self._encoder.layout, self._encoder.format = self.rate, self.layout, "fltp"
        self._encoder.bit_rate, self._encoder.time_base = bitrate, Fraction(1, self.rate)
        has_start = video.start_time is not None and video.time_base is not None
        self._video_start = float(video.start_time * video.time_base) if has_start else 0.0  # type: ignore[operator]
        self._next_sample: int | None = None

    def encode(self, frame: AudioFrame | None) -> list[Packet]:
        packets: list[Packet] = []
        for resampled in self._resampler.resample(frame):
            if self._next_sample is None:
                lead = (
                    frame.time if frame is not None and frame.time is not None else 0.0
                ) - self._video_start
                self._next_sample = max(0, round(lead * self.rate))
            resampled.pts, resampled.time_base = self._next_sample, Fraction(1, self.rate)
            self._next_sample += resampled.samples
            packets += self._encoder.encode(resampled)
        if frame is None:
            packets += self._encoder.encode(None)
        return packets
