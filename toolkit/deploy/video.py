"""Frames in (video file, camera, folder of images) and frames out (video file, folder of PNGs).

Why PyAV: it is FFmpeg's own decoders and encoders behind a maintained Python API, with wheels
that carry FFmpeg (H.264 via libx264 included) and the v4l2 camera input, so the edge device
needs no system FFmpeg. It is an optional extra (`video`): a folder of images in and a
folder of PNGs out work without it.

Every source yields uint8 HxWx3 RGB arrays of one size (`decoded()` yields video frames as the
decoder gave them, `decoded.DecodedFrame`, their RGB made only when something shows it); a frame
of another size stops the stream with a `UserError` naming the frame (the background and the
output video have one size). A
video file that becomes undecodable part-way ends the stream there, with a note, rather than
losing the frames already processed; one that yields nothing is an error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError, first_line
from ..core.fsutil import ensure_dir
from ..core.optional import import_optional
from ..render import imageio
from ..tasks.infer import IMAGE_SUFFIXES
from .decoded import MATRICES, MATRIX_TAG, DecodedFrame, Frame, Planes

# output suffix -> (container format, encoders to try in order)
VIDEO_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "h264", "mpeg4")),
    ".m4v": ("mp4", ("libx264", "h264", "mpeg4")),
    ".mov": ("mov", ("libx264", "h264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "h264", "mpeg4")),
    ".avi": ("avi", ("mpeg4", "libx264")),
}
DEFAULT_FPS = 25.0


def require_av() -> Any:
    """PyAV, or one line naming the extra that installs it."""
    return import_optional("av", "PyAV (video files and cameras)", "video")


class FrameSource:
    """An iterable of uint8 HxWx3 RGB frames of one size; a context manager that closes it."""

    kind = "?"

    def __init__(self, label: str, fps: float, expected: int | None):
        self.label = label
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.expected = expected or None  # frame count when the container says, else None
        self.notes: list[str] = []
        self.size: tuple[int, int] | None = None  # (h, w) of the first frame

    def __iter__(self) -> Iterator[np.ndarray]:
        return (np.asarray(frame) for frame in self.decoded())

    def decoded(self) -> Iterator[Frame]:
        """The frames as decoded: RGB arrays, or `DecodedFrame`s whose RGB is made only when
        asked (`np.asarray`), so a stream that does not show the picture never converts it."""
        for index, frame in enumerate(self._frames()):
            if not isinstance(frame, DecodedFrame):
                frame = np.asarray(frame)
            if len(frame.shape) != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise UserError(f"{self.label}: frame {index} is not an RGB image (shape {frame.shape}, {frame.dtype})")
            if self.size is None:
                self.size = frame.shape[:2]
            elif frame.shape[:2] != self.size:
                h, w = frame.shape[:2]
                raise UserError(
                    f"{self.label}: frame {index} is {w}x{h} but the stream started at {self.size[1]}x{self.size[0]} "
                    "(the frame size must not change mid-stream)"
                )
            yield frame

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderSource(FrameSource):
    """Image files of a folder in name order (a camera's dump, an image sequence)."""

    kind = "folder"

    def __init__(self, folder: Path, fps: float | None = None):
        self.files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        super().__init__(str(folder), fps or DEFAULT_FPS, len(self.files))

    def _frames(self) -> Iterator[np.ndarray]:
        for f in self.files:
            yield imageio.to_uint8(imageio.read_rgb(f))


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's reason ("Invalid data found when processing input") without the errno and path."""
    reason = getattr(error, "strerror", None)
    return str(reason) if reason else first_line(error)


def _why_not_a_video(target: str, kind: str, error: BaseException) -> str:
    """What the file is instead, when it is plainly something else; else FFmpeg's reason."""
    if kind != "camera" and Path(target).is_file():
        from ..core.sniff import describe

        what = describe(target)
        if not what.startswith(("binary data", "an MP4", "a Matroska", "an AVI")):
            return f"it is {what}, not a video"
    return ffmpeg_reason(error)


class AvSource(FrameSource):
    """The first video stream of a file or a camera device, decoded by FFmpeg (PyAV)."""

    def __init__(self, target: str, label: str, kind: str, fmt: str | None = None, fps: float | None = None,
                 options: dict[str, str] | None = None, timeout_s: float | None = None):
        """`options`: FFmpeg's (e.g. `rtsp_transport`); `timeout_s`: how long opening and each read
        may wait (a network stream that stalls then raises instead of blocking forever)."""
        av = require_av()
        self.kind = kind
        try:
            self.container = av.open(target, format=fmt, options=options or {}, timeout=(timeout_s, timeout_s) if timeout_s else None)
        except av.FFmpegError as e:
            raise UserError(f"{label}: not a readable {'camera' if kind == 'camera' else 'video'}: {_why_not_a_video(target, kind, e)}") from None
        except ValueError as e:  # "no container format 'v4l2'": an FFmpeg built without the device
            raise UserError(f"{label}: this PyAV cannot open cameras ({first_line(e)}); install PyAV built against a system FFmpeg") from None
        if not self.container.streams.video:
            self.container.close()
            raise UserError(f"{label}: not a readable video (it has no video stream)")
        self.stream = self.container.streams.video[0]
        # FFmpeg's own threads: frame threads for a file (throughput); for a camera or a network
        # stream slice threads only, since frame threads hold each frame back while the next ones
        # decode (a 720p H.264 clip: 5 packets in before the first frame out, against 3)
        self.stream.thread_type = "AUTO" if kind == "video" else "SLICE"
        rate = self.stream.average_rate or self.stream.guessed_rate
        super().__init__(label, fps or (float(rate) if rate else DEFAULT_FPS), self.stream.frames if kind == "video" else None)

    def _frames(self) -> Iterator[Frame]:
        av = require_av()
        count = 0
        decoded = self.container.decode(self.stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except (av.FFmpegError, EOFError) as e:
                if count == 0:
                    raise UserError(f"{self.label}: not a readable video: {_why_not_a_video(self.label, self.kind, e)}") from None
                self.notes.append(f"{self.label}: decoding stopped after frame {count - 1} ({ffmpeg_reason(e)}); the rest is unreadable")
                return
            count += 1
            yield DecodedFrame.wrap(frame)

    def close(self) -> None:
        self.container.close()


def camera_target(index: int) -> tuple[str, str]:
    """(FFmpeg input, format) for camera `index` on this OS."""
    if sys.platform.startswith("linux"):
        device = f"/dev/video{index}"
        if not os.path.exists(device):
            raise UserError(f"camera {index}: {device} does not exist (no camera with that index)")
        return device, "v4l2"
    if sys.platform == "darwin":
        return str(index), "avfoundation"
    raise UserError(f"camera {index}: camera indices are supported on Linux (v4l2) and macOS (avfoundation); give a video file or folder")


NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
TRANSPORTS = ("tcp", "udp")


def is_network(source: str) -> bool:
    return source.lower().startswith(NETWORK_SCHEMES)


def open_network(url: str, fps: float | None = None, *, transport: str = "tcp", stall_s: float = 10.0) -> AvSource:
    """An RTSP/RTMP/HTTP(S)/UDP/TCP/SRT stream through FFmpeg; RTSP over `transport` (tcp: no
    lost packets, the usual choice through NAT; udp: lower latency on a clean LAN)."""
    if transport not in TRANSPORTS:
        raise UserError(f"--rtsp-transport must be tcp or udp, got {transport!r}")
    options = {"rtsp_transport": transport} if url.lower().startswith(("rtsp://", "rtsps://")) else {}
    return AvSource(url, public_label(url), "network", None, fps, options=options, timeout_s=stall_s)


def public_label(url: str) -> str:
    """The URL without its user and password: what notes and errors show."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{rest[len(host.rsplit('@', 1)[0]) + 1:]}" if "@" in host else url


def open_source(source: str, fps: float | None = None, *, transport: str = "tcp", stall_s: float = 10.0) -> FrameSource:
    """A video file, a folder of images, a camera index (`0`) or device (`/dev/video0`), or a
    network URL (rtsp://, rtmp://, http(s)://, udp://, ...)."""
    if is_network(source):
        return open_network(source, fps, transport=transport, stall_s=stall_s)
    path = Path(source)
    if source.isdigit() and not path.exists():
        target, fmt = camera_target(int(source))
        return AvSource(target, f"camera {source}", "camera", fmt, fps)
    if source.startswith("/dev/video"):
        return AvSource(source, source, "camera", "v4l2" if sys.platform.startswith("linux") else None, fps)
    if not path.exists():
        raise UserError(f"{source}: no such video file, folder or camera index")
    if path.is_dir():
        return FolderSource(path, fps)
    return AvSource(str(path), str(path), "video", None, fps)


class PngFolderWriter:
    """Output frames as `frame_000000.png`, ... in a folder (each written atomically)."""

    def __init__(self, folder: Path):
        self.folder = ensure_dir(folder)
        self.count = 0
        self.codec = "png"

    def write(self, rgb: np.ndarray) -> None:
        imageio.save_png(self.folder / f"frame_{self.count:06d}.png", rgb)
        self.count += 1

    def close(self) -> None:
        return None


FILE_PRESET, LIVE_PRESET = "veryfast", "ultrafast"
# Pictures of this many pixels or more (the panel of a 720p camera: 3 MP) are encoded with
# LARGE_FILE_PRESET: x264's CPU grows with the pixels, and at veryfast the panel of a 720p
# camera cost more CPU than the model on 2 cores (superfast: 28 % less CPU, files ~45 % larger
# at the same CRF; the panel 17.6 -> 22.0 frames/s, benchmarks/README.md).
LARGE_PICTURE_PIXELS, LARGE_FILE_PRESET = 2_000_000, "superfast"
FILE_CRF = "20"


class VideoWriter:
    """Encode pictures (uint8 RGB, or the decoder's `Planes`) into `path` (already a temporary
    name: the caller renames it).

    The container and stream are made at the first frame, once the size is known; odd sizes are
    padded by one dark pixel row/column because H.264 in yuv420p needs even dimensions.

    The encoder runs on its own threads (FFmpeg's, as many as there are cores), so the stream's
    encode step mostly hands frames over. For a `live` source it is tuned for latency (x264's
    `ultrafast` preset, `zerolatency`: no look-ahead, no B-frames, slice threads, so a frame
    leaves the encoder as soon as it is in); for a file, for quality at a speed that keeps up
    (`veryfast`, CRF 20, frame threads; `superfast` for pictures of `LARGE_PICTURE_PIXELS` and
    more, when `size`, the pictures' (h, w), says so). `preset` overrides the x264 preset;
    `describe()` is the line the stream says and records.

    Colours: a file that starts with `Planes` carries their source's colour tag (libx264 writes
    it; `takes_planes` is False for encoders that drop it) and later pictures in another matrix
    are converted to it; a file that starts with RGB is BT.601, untagged, as it always was.
    """

    def __init__(self, path: Path, fmt: str, codecs: tuple[str, ...], fps: float, *, live: bool = False,
                 preset: str | None = None, size: tuple[int, int] | None = None):
        av = require_av()
        self.path = path
        self.fmt = fmt
        self.fps = Fraction(fps).limit_denominator(1001)
        available = av.codecs_available
        self.codec = next((c for c in codecs if c in available), codecs[-1])
        self.live = live
        self.options: dict[str, str] = {}
        self.why = ""  # why this preset, for `describe`
        if self.codec == "libx264":
            chosen = preset or (LIVE_PRESET if live else file_preset(size))
            self.options = {"preset": chosen} | ({"tune": "zerolatency"} if live else {"crf": FILE_CRF})
            if preset:
                self.why = "--preset"
            elif live:
                self.why = "live: low latency"
            else:
                self.why = "a file of large pictures: speed" if chosen == LARGE_FILE_PRESET else "a file: quality"
        self.container: Any = None
        self.stream: Any = None
        self.matrix = "bt601"  # the file's colours: the first picture's (Planes' matrix; BT.601 for RGB)
        self.count = 0

    @property
    def takes_planes(self) -> bool:
        """Whether `Planes` can be encoded as they are (the encoder keeps their colour tag)."""
        return self.codec == "libx264"

    def describe(self) -> str:
        """'libx264 (preset veryfast, crf 20, frame threads; a file: quality)': what encodes."""
        if not self.options:
            return f"{self.codec} (libx264 is not in this PyAV's FFmpeg)" if self.fmt != "avi" else f"{self.codec} (.avi's encoder)"
        settings = ", ".join(f"{k} {v}" for k, v in self.options.items())
        return f"{self.codec} ({settings}, {'slice' if self.live else 'frame'} threads; {self.why})"

    def _open(self, h: int, w: int, tag: int | None) -> None:
        """The container and stream; `tag`: the first Planes' colour tag (None: RGB pictures)."""
        av = require_av()
        self.container = av.open(str(self.path), mode="w", format=self.fmt)
        self.stream = self.container.add_stream(self.codec, rate=self.fps)
        self.stream.width, self.stream.height = w + w % 2, h + h % 2
        self.stream.pix_fmt = "yuv420p"
        if tag is not None:  # the pictures' colours are the source's: the file says what the source said
            self.matrix = MATRICES[tag]
            self.stream.codec_context.colorspace = tag
            self.stream.codec_context.color_range = 1  # MPEG (limited), as decoded
        self.stream.codec_context.thread_count = 0  # FFmpeg's: one per core
        self.stream.codec_context.thread_type = "SLICE" if self.live else "FRAME"
        if self.options:
            self.stream.options = dict(self.options)

    def write(self, picture: np.ndarray | Planes) -> None:
        """Encode one picture: uint8 RGB, or `Planes` (4:2:0, taken as they are when in the
        file's matrix, converted to it when not)."""
        av = require_av()
        if isinstance(picture, Planes):
            if self.container is None:
                self._open(*picture.size, picture.tag)
            frame = av.VideoFrame.from_ndarray(picture.i420, format="yuv420p")
            if picture.matrix != self.matrix:  # a source that changed after a reconnect, or an RGB start
                frame = frame.reformat(format="yuv420p", src_colorspace=MATRIX_TAG[picture.matrix], src_color_range=1,
                                       dst_colorspace=MATRIX_TAG[self.matrix], dst_color_range=1)
        else:
            frame = self._rgb_frame(picture)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def _rgb_frame(self, rgb: np.ndarray) -> Any:
        """An RGB picture as the encoder's frame (padded to even sides; in the file's matrix)."""
        av = require_av()
        h, w = rgb.shape[:2]
        if self.container is None:
            self._open(h, w, None)
        if (h % 2) or (w % 2):
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.matrix == "bt601":
            return frame  # FFmpeg converts it as it always has (BT.601)
        return frame.reformat(format="yuv420p", dst_colorspace=MATRIX_TAG[self.matrix], dst_color_range=1)

    def close(self) -> None:
        """Flush the encoder and write the container's index: the file is then playable."""
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


def file_preset(size: tuple[int, int] | None) -> str:
    """x264's preset for a file of pictures of `size` (h, w; None: not known)."""
    large = size is not None and size[0] * size[1] >= LARGE_PICTURE_PIXELS
    return LARGE_FILE_PRESET if large else FILE_PRESET


def video_format(out: Path) -> tuple[str, tuple[str, ...]] | None:
    """(container format, encoders) when `out` names a video file; None when it is a folder."""
    if out.is_dir() or not out.suffix:
        return None
    entry = VIDEO_FORMATS.get(out.suffix.lower())
    if entry is None:
        raise UserError(f"{out}: unknown video suffix {out.suffix!r} (use one of {', '.join(VIDEO_FORMATS)}, or a folder for PNG frames)")
    return entry


def probe_video(path: str | Path) -> tuple[int, int, int, float]:
    """(frames decoded, width, height, fps) of a video file: what a player would see."""
    av = require_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n, w, h = 0, stream.width, stream.height
        for frame in container.decode(stream):
            n += 1
            w, h = frame.width, frame.height
        rate = stream.average_rate or stream.guessed_rate
        return n, w, h, float(rate) if rate else 0.0
