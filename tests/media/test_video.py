"""Video renditions, probing and stills over short clips the tests encode with PyAV."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from hub_pipelines.media.video import (
    Rung,
    VideoLimits,
    VideoRejected,
    VideoSpec,
    decoder_skip_loop_filter,
    extract_stills,
    extract_thumbnail,
    probe_video,
    render_renditions,
    rung_interpolation,
)
from hub_pipelines.media.video_probe import open_input

SMALL_LADDER = (Rung("144p", 144, 300_000),)


def write_clip(
    path: Path,
    width: int,
    height: int,
    *,
    seconds: float = 1.0,
    fps: int = 30,
    audio: bool = True,
    rotation: int | None = None,
    black_seconds: float = 0.0,
    frame_times: list[float] | None = None,
    faststart: bool = False,
    marker: bool = False,
) -> Path:
    """A moving gradient with noise (black for the first `black_seconds`) and a 440 Hz tone.

    `rotation` is clockwise degrees stored as a display matrix; `frame_times` makes the frame rate
    variable; `marker` paints the coded top-left corner white on a dark picture.
    """
    times = frame_times if frame_times is not None else [i / fps for i in range(round(seconds * fps))]
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    options = {"movflags": "+faststart"} if faststart else {}
    ys, xs = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(7).integers(0, 48, size=(height, width))
    picture = (np.stack([xs % 200, ys % 200, (xs + ys) % 200], -1) + noise[..., None]).astype(np.uint8)
    with av.open(str(path), "w", format="mp4", options=options) as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            video.set_display_rotation(-rotation)
        sound = container.add_stream("aac", rate=48000, layout="stereo") if audio else None
        for index, at in enumerate(times):
            if marker:
                rgb = np.full((height, width, 3), 20, dtype=np.uint8)
                rgb[: height // 4, : width // 4] = 255
            elif at < black_seconds:
                rgb = np.zeros((height, width, 3), dtype=np.uint8)
            else:
                rgb = np.roll(picture, (index * 4, index * 8), axis=(0, 1))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = round(at * 1000), Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            total = round((times[-1] + 1 / fps) * 48000)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 48000)).astype(np.float32)
            for offset in range(0, total, 1024):
                chunk = np.ascontiguousarray(np.stack([tone[offset : offset + 1024]] * 2))
                samples = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                samples.sample_rate, samples.pts = 48000, offset
                container.mux(sound.encode(samples))
            container.mux(sound.encode())
    return path


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, offset = path.read_bytes(), [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        return sorted(
            float(packet.pts * stream.time_base)
            for packet in container.demux(stream)
            if packet.pts is not None and packet.is_keyframe
        )


def stream_kinds(path: Path) -> dict[str, str]:
    with av.open(str(path)) as container:
        return {stream.type: stream.codec_context.name for stream in container.streams}


def first_frame(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as container:
        return next(container.decode(video=0))


@pytest.fixture(scope="module")
def ladder_1080p(tmp_path_factory: pytest.TempPathFactory) -> list:
    folder = tmp_path_factory.mktemp("ladder_1080p")
    source = write_clip(folder / "source.mp4", 1920, 1080, seconds=1.0)
    return render_renditions(source, folder / "out")


@pytest.fixture
def clip(tmp_path: Path) -> Callable[..., Path]:
    return lambda width, height, **options: write_clip(tmp_path / "source.mp4", width, height, **options)


def test_1080p_source_gets_three_renditions_with_source_aspect(ladder_1080p: list) -> None:
    sizes = [(r.label, r.width, r.height) for r in ladder_1080p]
    assert sizes == [("480p", 854, 480), ("720p", 1280, 720), ("1080p", 1920, 1080)]
    for rendition in ladder_1080p:
        frame = first_frame(rendition.path)
        assert (frame.width, frame.height) == (rendition.width, rendition.height)
        assert rendition.bytes == rendition.path.stat().st_size > 0
        assert rendition.duration_seconds == pytest.approx(1.0, abs=0.05)


def test_renditions_are_h264_and_aac_in_mp4_with_moov_before_mdat(ladder_1080p: list) -> None:
    for rendition in ladder_1080p:
        assert stream_kinds(rendition.path) == {"video": "h264", "audio": "aac"}
        boxes = top_level_boxes(rendition.path)
        assert boxes[0] == "ftyp"
        assert boxes.index("moov") < boxes.index("mdat")


def test_keyframes_fall_exactly_every_two_seconds(clip: Callable[..., Path], tmp_path: Path) -> None:
    source = clip(256, 144, seconds=4.5, audio=False)
    (rendition,) = render_renditions(source, tmp_path / "out", VideoSpec(ladder=SMALL_LADDER))
    assert keyframe_times(rendition.path) == pytest.approx([0.0, 2.0, 4.0])


def test_every_rung_of_a_ladder_has_keyframes_every_two_seconds_and_every_frame(
    clip: Callable[..., Path], tmp_path: Path
) -> None:
    source = clip(640, 360, seconds=4.5, audio=False)
    ladder = (Rung("144p", 144, 300_000), Rung("240p", 240, 500_000), Rung("360p", 360, 800_000))
    renditions = render_renditions(source, tmp_path / "out", VideoSpec(ladder=ladder))
    assert [(r.width, r.height) for r in renditions] == [(256, 144), (426, 240), (640, 360)]
    for rendition in renditions:
        assert keyframe_times(rendition.path) == pytest.approx([0.0, 2.0, 4.0])
        with av.open(str(rendition.path)) as container:
            pts = sorted(p.pts for p in container.demux(video=0) if p.pts is not None)
        assert len(pts) == 135 and len(set(pts)) == 135


def test_every_rung_carries_the_same_aac_packets(ladder_1080p: list) -> None:
    def audio_packets(path: Path) -> list[tuple[int | None, bytes]]:
        with av.open(str(path)) as container:
            return [(p.pts, bytes(p)) for p in container.demux(audio=0) if p.size]

    tracks = [audio_packets(rendition.path) for rendition in ladder_1080p]
    assert len(tracks[0]) > 40
    assert tracks[1] == tracks[0] and tracks[2] == tracks[0]


def test_720p_source_skips_the_1080p_rung(clip: Callable[..., Path], tmp_path: Path) -> None:
    renditions = render_renditions(clip(1280, 720, seconds=1.0), tmp_path / "out")
    assert [(r.label, r.width, r.height) for r in renditions] == [("480p", 854, 480), ("720p", 1280, 720)]


def test_portrait_rotation_metadata_gives_upright_output(clip: Callable[..., Path], tmp_path: Path) -> None:
    source = clip(854, 480, seconds=0.5, rotation=90, marker=True)
    info = probe_video(source)
    assert (info.width, info.height, info.rotation) == (480, 854, 90)
    (rendition,) = render_renditions(source, tmp_path / "out")
    frame = first_frame(rendition.path)
    assert (frame.width, frame.height, frame.rotation) == (480, 854, 0)
    luma = frame.to_ndarray(format="gray")
    # Turned clockwise, the coded top-left corner is displayed at the top right.
    assert luma[:100, -100:].mean() > 200
    assert luma[:100, :100].mean() < 60


def test_video_without_audio_gives_video_only_renditions(clip: Callable[..., Path], tmp_path: Path) -> None:
    source = clip(640, 480, seconds=0.5, audio=False)
    assert probe_video(source).has_audio is False
    (rendition,) = render_renditions(source, tmp_path / "out")
    assert stream_kinds(rendition.path) == {"video": "h264"}


def test_odd_dimensions_give_even_output_sizes(clip: Callable[..., Path], tmp_path: Path) -> None:
    (rendition,) = render_renditions(clip(853, 481, seconds=0.5), tmp_path / "out")
    assert (rendition.width, rendition.height) == (852, 480)
    frame = first_frame(rendition.path)
    assert (frame.width, frame.height) == (852, 480)


def test_source_below_the_lowest_rung_gets_one_rendition_at_its_own_size(
    clip: Callable[..., Path], tmp_path: Path
) -> None:
    (rendition,) = render_renditions(clip(321, 241, seconds=0.5), tmp_path / "out")
    assert (rendition.label, rendition.width, rendition.height) == ("240p", 320, 240)


def test_variable_frame_rate_input_gives_constant_frame_rate_output(
    clip: Callable[..., Path], tmp_path: Path
) -> None:
    steps = [0.02, 0.05, 0.03, 0.2, 0.01, 0.04] * 5
    times = [float(t) for t in np.cumsum([0.0, *steps])]
    source = clip(320, 240, frame_times=times, audio=False)
    (rendition,) = render_renditions(source, tmp_path / "out", VideoSpec(ladder=SMALL_LADDER))
    with av.open(str(rendition.path)) as container:
        stream = container.streams.video[0]
        pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
        rate = stream.average_rate
    assert rate is not None
    assert len(set(np.diff(pts))) == 1
    assert len(pts) == pytest.approx(float((times[-1] + 1 / rate) * rate), abs=1)


@pytest.mark.parametrize("faststart", [False, True], ids=["index-at-end", "index-at-front"])
def test_truncated_file_is_rejected_with_its_name(
    clip: Callable[..., Path], tmp_path: Path, faststart: bool
) -> None:
    source = clip(320, 240, seconds=2.0, faststart=faststart)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(VideoRejected, match=r"rejected video 'truncated\.mp4': "):
        render_renditions(truncated, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.mp4"))


def test_rejected_video_leaves_no_encoder_threads_running(clip: Callable[..., Path], tmp_path: Path) -> None:
    source = clip(320, 240, seconds=2.0, faststart=True)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(VideoRejected):
        render_renditions(truncated, tmp_path / "out", VideoSpec(ladder=SMALL_LADDER))
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("encode-")]


def test_bytes_that_are_not_a_video_are_rejected() -> None:
    with pytest.raises(VideoRejected, match=r"rejected video '<bytes>': cannot open: Invalid data"):
        probe_video(b"this is a text file named clip.mp4\n" * 100)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (VideoLimits(max_duration_seconds=0.5), "exceeds the limit of 0.5 s"),
        (VideoLimits(max_input_bytes=1000), "bytes exceeds the limit of 1000"),
        (VideoLimits(max_pixels=320 * 239), "320x240 exceeds the limit of 76480 pixels"),
    ],
    ids=["duration", "bytes", "pixels"],
)
def test_video_over_a_limit_is_rejected(
    clip: Callable[..., Path], tmp_path: Path, limits: VideoLimits, reason: str
) -> None:
    source = clip(320, 240, seconds=1.0, audio=False)
    with pytest.raises(VideoRejected, match=reason):
        render_renditions(source, tmp_path / "out", VideoSpec(limits=limits))


def write_live_matroska(
    path: Path, frame_times: list[float], sizes: list[tuple[int, int]] | None = None
) -> Path:
    """Matroska as a live recorder writes it: no duration in the header, only in the frames' times.
    With `sizes`, each frame is encoded at its own size (a new SPS in the stream) and muxed as one
    stream whose header states the first size."""
    sizes = sizes or [(64, 48)] * len(frame_times)
    packets = []
    for index, (at, (width, height)) in enumerate(zip(frame_times, sizes, strict=True)):
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = Fraction(1, 1000)
        encoder.options = {"repeat-headers": "1"} if sizes[0] != (width, height) else {}
        picture = np.full((height, width, 3), 40 * index % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = round(at * 1000), Fraction(1, 1000)
        packets += [(at, bytes(packet)) for packet in [*encoder.encode(frame), *encoder.encode(None)]]
        if index == 0:
            extradata = encoder.extradata
    with av.open(str(path), "w", format="matroska", options={"live": "1"}) as out:
        stream = out.add_stream("h264", rate=10)
        stream.width, stream.height = sizes[0]
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.extradata = extradata
        for at, data in packets:
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = round(at * 1000)
            packet.time_base = Fraction(1, 1000)
            packet.is_keyframe = True
            out.mux(packet)
    return path


def test_video_whose_header_declares_no_duration_is_rejected_when_its_frames_run_past_the_limit(
    tmp_path: Path,
) -> None:
    """Four frames, the last a minute on: without the check the gap was filled with repeated frames
    (hours of output for a few bytes, with a larger jump)."""
    source = write_live_matroska(tmp_path / "live.mkv", [0.0, 0.1, 0.2, 60.0])
    assert probe_video(source).duration_seconds == 0.0
    spec = VideoSpec(ladder=SMALL_LADDER, limits=VideoLimits(max_duration_seconds=5))

    with pytest.raises(
        VideoRejected, match=r"'live.mkv': runs past the limit of 5 s \(the header declared 0.0 s\)"
    ):
        render_renditions(source, tmp_path / "out", spec)
    assert not list((tmp_path / "out").glob("*.mp4"))
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("encode-")]


def test_video_whose_frames_grow_past_the_pixel_limit_mid_stream_is_rejected(tmp_path: Path) -> None:
    source = write_live_matroska(tmp_path / "grows.mkv", [0.0, 0.1, 0.2], [(64, 48), (64, 48), (1280, 720)])
    spec = VideoSpec(ladder=SMALL_LADDER, limits=VideoLimits(max_pixels=64 * 48))

    with pytest.raises(
        VideoRejected,
        match=r"'grows.mkv': a frame of 1280x720 exceeds the limit of 3072 pixels \(the header declared 64x48\)",
    ):
        render_renditions(source, tmp_path / "out", spec)


def test_thumbnail_skips_black_opening_frames(clip: Callable[..., Path]) -> None:
    source = clip(320, 180, seconds=2.0, black_seconds=0.6)
    assert first_frame(source).to_ndarray(format="gray").mean() < 5
    thumbnail = Image.open(io.BytesIO(extract_thumbnail(source, width=160)))
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (160, 90)
    assert np.asarray(thumbnail.convert("L")).mean() > 60


def test_poster_is_upright_at_display_size(clip: Callable[..., Path]) -> None:
    stills = extract_stills(clip(640, 360, seconds=1.0, rotation=90, marker=True))
    poster = Image.open(io.BytesIO(stills.poster))
    assert poster.size == (360, 640)
    assert Image.open(io.BytesIO(stills.thumbnail)).size == (320, 569)
    luma = np.asarray(poster.convert("L"))
    assert luma[:60, -60:].mean() > 200
    assert luma[:60, :60].mean() < 60


def test_rungs_reduced_twofold_or_more_are_scaled_by_area_averaging() -> None:
    spec = VideoSpec()
    source = 1920 * 1080
    assert rung_interpolation(spec, source, 854 * 480) == "AREA"
    assert rung_interpolation(spec, source, 1280 * 720) == spec.interpolation == "BICUBIC"
    assert rung_interpolation(spec, source, source) == "BICUBIC"


def test_deblocking_is_skipped_only_when_every_rung_is_reduced_at_least_as_much_as_480p_from_1080p() -> None:
    spec = VideoSpec()
    source = 1920 * 1080
    assert decoder_skip_loop_filter(spec, source, [854 * 480]) == "all"
    assert decoder_skip_loop_filter(spec, source, [854 * 480, 1280 * 720]) == "default"
    assert decoder_skip_loop_filter(spec, source, [source]) == "default"
    uhd = 3840 * 2160
    assert decoder_skip_loop_filter(spec, uhd, [854 * 480, 1280 * 720, 1920 * 1080]) == "default"
    assert decoder_skip_loop_filter(spec, uhd, [854 * 480, 1280 * 720]) == "all"
    keep = VideoSpec(large_reduction_skip_loop_filter="default")
    assert decoder_skip_loop_filter(keep, source, [854 * 480]) == "default"


def test_unknown_skip_loop_filter_level_is_refused_with_its_value() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        VideoSpec(large_reduction_skip_loop_filter="sometimes")


def test_open_input_skipping_the_loop_filter_decodes_unfiltered_pictures(tmp_path: Path) -> None:
    source = tmp_path / "deblocked.mp4"
    noise = np.random.default_rng(3).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    with av.open(str(source), "w") as container:
        # write_clip's ultrafast preset turns deblocking off; veryfast at a high QP deblocks hard.
        video = container.add_stream("libx264", rate=30, options={"preset": "veryfast", "qp": "40"})
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.roll(noise, index * 3, axis=1), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())

    def pictures(skip_loop_filter: str) -> list[np.ndarray]:
        with open_input(source, source.name, skip_loop_filter=skip_loop_filter) as container:
            return [frame.to_ndarray() for frame in container.decode(video=0)]

    deblocked, unfiltered = pictures("default"), pictures("all")
    assert len(deblocked) == len(unfiltered) == 10
    assert all(not np.array_equal(a, b) for a, b in zip(deblocked, unfiltered, strict=True))
