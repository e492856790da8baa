"""Probing and opening videos with PyAV: what a video is, whether it is within limits, its frames
(decoded, turned upright, and on a constant-rate clock).

Leave PyAV's libav logging off (its default): with frame-threaded codecs, a Python log callback can
deadlock when a codec closes (seen here with `av.logging.set_level(av.logging.ERROR)`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import av.error
import av.filter
from av.audio.frame import AudioFrame
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

Source = str | os.PathLike[str] | bytes

_STANDARD_RATES = tuple(
    Fraction(rate) for rate in ("24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60")
)


class VideoRejected(ValueError):
    """The input cannot be turned into renditions: corrupt, truncated, over a limit, or not a video."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"rejected video {name!r}: {reason}")


@dataclass(frozen=True)
class VideoLimits:
    """Inputs above any of these are rejected before decoding."""

    max_duration_seconds: float = 3 * 3600
    max_input_bytes: int = 4 << 30
    max_pixels: int = 8192 * 4320


@dataclass(frozen=True)
class VideoInfo:
    """What a video is. width/height are as displayed, after `rotation` (clockwise degrees)."""

    duration_seconds: float
    width: int
    height: int
    rotation: int
    fps: float
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    bytes: int


def probe_video(source: Source, *, limits: VideoLimits | None = None, name: str | None = None) -> VideoInfo:
    """Describe a video; with `limits`, reject one over a limit before decoding anything."""
    name = name or source_name(source)
    size = _size_of(source)
    if limits and size > limits.max_input_bytes:
        raise VideoRejected(name, _bytes_breach(size, limits))
    with open_input(source, name) as container:
        stream = first_video_stream(container, name)
        duration = _duration_seconds(container, stream)
        breach = limits and _stream_breach(container, stream, limits)
        if breach:
            raise VideoRejected(name, breach)
        first = next(decode_frames(container, name, stream), None)
        if not isinstance(first, VideoFrame):
            raise VideoRejected(name, "no decodable video frame")
        rotation = clockwise(first.rotation)
        sar = stream.sample_aspect_ratio or Fraction(1)
        width, height = round(first.width * sar), first.height
        if rotation in (90, 270):
            width, height = height, width
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            duration_seconds=duration,
            width=width,
            height=height,
            rotation=rotation,
            fps=float(stream.average_rate or stream.guessed_rate or 0),
            has_audio=audio is not None,
            video_codec=stream.codec_context.name,
            audio_codec=audio.codec_context.name if audio else None,
            bytes=size,
        )


def decode_frames(container: InputContainer, name: str, *streams: Any) -> Iterator[VideoFrame | AudioFrame]:
    """The frames of `streams` in demux order; a decoding error rejects the video with its position."""
    at = 0.0
    try:
        for packet in container.demux(*[stream for stream in streams if stream is not None]):
            if packet.pts is not None and packet.time_base is not None:
                at = float(packet.pts * packet.time_base)
            yield from packet.decode()
    except av.error.FFmpegError as error:
        raise VideoRejected(name, f"corrupt or truncated at {at:.2f} s: {_reason(error)}") from error


def open_input(source: Source, name: str, *, skip_loop_filter: str = "default") -> InputContainer:
    """The opened container, its video decoded with frame and slice threads like the ffmpeg CLI and
    deblocked unless `skip_loop_filter` (the decoder option of that name) says otherwise."""
    target: str | IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    try:
        container = av.open(target, "r")
    except av.error.FFmpegError as error:
        raise VideoRejected(name, f"cannot open: {_reason(error)}") from error
    for stream in container.streams.video:
        stream.thread_type = "AUTO"
        if skip_loop_filter != "default":
            stream.codec_context.options = {"skip_loop_filter": skip_loop_filter}
    return container


def first_video_stream(container: InputContainer, name: str) -> VideoStream:
    if not container.streams.video:
        raise VideoRejected(name, "no video stream")
    return container.streams.video[0]


def _duration_seconds(container: InputContainer, stream: VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def header_limit_breach(source: str | os.PathLike[str], limits: VideoLimits) -> str | None:
    """Which limit the video's size or container header (duration, coded size) exceeds, if any,
    without decoding a frame. A file that does not open as a video breaches nothing here: deciding
    what it is belongs to the renderer."""
    size = _size_of(source)
    if size > limits.max_input_bytes:
        return _bytes_breach(size, limits)
    try:
        container = av.open(os.fspath(source), "r")
    except av.error.FFmpegError:
        return None
    with container:
        if not container.streams.video:
            return None
        return _stream_breach(container, container.streams.video[0], limits)


def _bytes_breach(size: int, limits: VideoLimits) -> str:
    return f"{size} bytes exceeds the limit of {limits.max_input_bytes}"


def _stream_breach(container: InputContainer, stream: VideoStream, limits: VideoLimits) -> str | None:
    duration = _duration_seconds(container, stream)
    width, height = stream.codec_context.width, stream.codec_context.height
    if duration > limits.max_duration_seconds:
        return f"{duration:.1f} s exceeds the limit of {limits.max_duration_seconds:g} s"
    if width * height > limits.max_pixels:
        return f"{width}x{height} exceeds the limit of {limits.max_pixels} pixels"
    return None


def _reason(error: av.error.FFmpegError) -> str:
    return error.strerror or str(error)


def clockwise(counterclockwise: float) -> int:
    return round(-counterclockwise / 90) % 4 * 90


def even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def source_name(source: Source) -> str:
    return "<bytes>" if isinstance(source, bytes) else Path(os.fspath(source)).name


def _size_of(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else os.stat(source).st_size


class ConstantRate:
    """Turns frames with arbitrary timestamps into a constant-rate sequence of (frame, tick), like
    ffmpeg's fps filter: each frame lands on its nearest tick, a later frame on the same tick wins, gaps
    repeat a frame. Frames are not modified: every rung's thread reads them."""

    def __init__(self, rate: Fraction) -> None:
        self.rate, self.emitted = rate, 0
        self.start: float | None = None
        self._pending: VideoFrame | None = None
        self._pending_tick = 0

    def push(self, frame: VideoFrame) -> Iterator[tuple[VideoFrame, int]]:
        seconds = (
            frame.time if frame.time is not None else (self.start or 0.0) + float(self.emitted / self.rate)
        )
        if self.start is None:
            self.start = seconds
        tick = round((seconds - self.start) * self.rate)
        if self._pending is not None and tick > self.emitted:
            yield from self._emit_until(tick)
        self._pending, self._pending_tick = frame, max(tick, self.emitted)

    def finish(self) -> Iterator[tuple[VideoFrame, int]]:
        if self._pending is not None:
            yield from self._emit_until(self._pending_tick + 1)

    def _emit_until(self, tick: int) -> Iterator[tuple[VideoFrame, int]]:
        assert self._pending is not None
        while self.emitted < tick:
            yield self._pending, self.emitted
            self.emitted += 1


class Uprighter:
    """Rotates frames by the display matrix's angle with ffmpeg's transpose filters."""

    _FILTERS = {
        90: [("transpose", "clock")],
        180: [("hflip", ""), ("vflip", "")],
        270: [("transpose", "cclock")],
    }

    def __init__(self, rotation: int) -> None:
        self.rotation = rotation
        self._graph: av.filter.Graph | None = None

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        if not self.rotation:
            return frame
        if self._graph is None:
            self._graph = av.filter.Graph()
            nodes = [
                self._graph.add_buffer(
                    width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base
                )
            ]
            nodes += [
                self._graph.add(filter_name, args) for filter_name, args in self._FILTERS[self.rotation]
            ]
            nodes.append(self._graph.add("buffersink"))
            self._graph.link_nodes(*nodes).configure()
        self._graph.push(frame)
        rotated = self._graph.pull()
        assert isinstance(rotated, VideoFrame)
        return rotated


def output_rate(stream: VideoStream, max_fps: int) -> Fraction:
    """The constant output rate: the source's average rate, snapped to a standard rate when close."""
    measured = stream.average_rate or stream.guessed_rate or Fraction(30)
    if measured <= 0:
        measured = Fraction(30)
    closest = min(_STANDARD_RATES, key=lambda standard: abs(measured - standard))
    snapped = (
        closest if abs(measured - closest) / closest < Fraction(1, 200) else Fraction(max(1, round(measured)))
    )
    return min(snapped, Fraction(max_fps))
