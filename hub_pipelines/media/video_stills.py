"""Thumbnail and poster JPEGs of a video from a representative frame (never the black opening)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from hub_pipelines.media.video_probe import (
    VideoLimits,
    VideoRejected,
    decode_frames,
    even,
    first_video_stream,
    open_input,
    probe_video,
    source_name,
)


@dataclass(frozen=True)
class Stills:
    """A small thumbnail and a full-size poster (JPEG), both from the same representative frame."""

    thumbnail: bytes
    poster: bytes
    at_seconds: float


def extract_stills(
    source_path: str | os.PathLike[str],
    *,
    thumbnail_width: int = 320,
    poster_max_height: int = 1080,
    quality: int = 85,
    limits: VideoLimits | None = None,
    name: str | None = None,
) -> Stills:
    """Thumbnail and poster from the most detailed of the frames at 10 %, 25 % and 50 % of the video."""
    name = name or source_name(source_path)
    info = probe_video(source_path, limits=limits or VideoLimits(), name=name)
    with open_input(source_path, name) as container:
        stream = first_video_stream(container, name)
        candidates = [
            _frame_near(container, stream, name, info.duration_seconds * f) for f in (0.1, 0.25, 0.5)
        ]
    found = [frame for frame in candidates if frame is not None]
    if not found:
        raise VideoRejected(name, "no decodable video frame for a thumbnail")
    best = max(found, key=_detail_score)
    image = best.to_image()
    if info.rotation:
        image = image.rotate(-info.rotation, expand=True)
    image = image.resize((info.width, info.height)) if image.size != (info.width, info.height) else image
    poster = image.copy()
    if min(poster.size) > poster_max_height:
        scale = poster_max_height / min(poster.size)
        poster = poster.resize((even(poster.width * scale), even(poster.height * scale)))
    thumbnail = image.copy()
    thumbnail.thumbnail((thumbnail_width, thumbnail_width * 4))
    return Stills(
        thumbnail=_jpeg(thumbnail, quality), poster=_jpeg(poster, quality), at_seconds=best.time or 0.0
    )


def extract_thumbnail(source_path: str | os.PathLike[str], *, width: int = 320, quality: int = 85) -> bytes:
    """A JPEG thumbnail `width` pixels wide from a representative (not black) frame."""
    return extract_stills(source_path, thumbnail_width=width, quality=quality).thumbnail


def extract_poster(
    source_path: str | os.PathLike[str], *, max_height: int = 1080, quality: int = 85
) -> bytes:
    """A JPEG poster at display size (up to `max_height`) from the same frame as the thumbnail."""
    return extract_stills(source_path, poster_max_height=max_height, quality=quality).poster


def _frame_near(
    container: InputContainer, stream: VideoStream, name: str, seconds: float
) -> VideoFrame | None:
    """The first frame at or after `seconds` (seeking to the keyframe before it)."""
    if stream.time_base is not None and seconds > 0:
        try:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        except av.error.FFmpegError:
            container.seek(0, stream=stream)
    fallback = None
    for frame in decode_frames(container, name, stream):
        assert isinstance(frame, VideoFrame)
        fallback = frame
        if frame.time is None or frame.time >= seconds:
            return frame
    return fallback


def _detail_score(frame: VideoFrame) -> float:
    """Shannon entropy of the luma histogram: black or flat frames score near zero."""
    luma = frame.reformat(width=160, height=90, format="gray").to_ndarray()
    histogram = np.bincount(luma.ravel(), minlength=256).astype(np.float64)
    probabilities = histogram[histogram > 0] / histogram.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def _jpeg(image: Any, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    return buffer.getvalue()
