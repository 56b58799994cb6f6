"""Video I/O and the video stylisation pipeline.

Decoding and encoding use PyAV (FFmpeg libraries shipped inside its wheel). A *source* is a video
file or a folder of images; a *sink* is a video file (written to a temporary file in the same
folder, then renamed into place) or a folder of PNG frames (written to a temporary folder, then
renamed). Frames are (1, 3, H, W) float32 RGB tensors in [0, 1], as everywhere in brushwork.

The audio track of a video source is kept: its packets are copied unchanged when the output
container accepts the codec, otherwise decoded and re-encoded with the container's default audio
codec (AAC for .mp4/.mov). The output frame rate is the input's average rate (variable-rate input
becomes constant-rate); every decoded frame is written once, so the frame count is preserved.

:func:`stylize_video` runs any :class:`~brushwork.protocol.Stylizer` over a clip, optionally
through :class:`~brushwork.temporal.TemporalStylizer` for temporal consistency, and reports one
:class:`~brushwork.protocol.Progress` event per frame (``method="video"``, ``kind="step"``).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..errors import BrushworkError
from ..core import validate
from ..core.image import SAVE_FORMATS, load_image, max_pixels_default, resize, save_image

VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTS = tuple(SAVE_FORMATS)
# Video encoders we offer; the name given to PyAV for each.
CODECS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "mpeg4": "mpeg4",
          "mjpeg": "mjpeg"}
DEFAULT_FOLDER_FPS = Fraction(25)


class VideoError(BrushworkError):
    """A video (or frame folder) could not be read or written."""


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - a declared dependency
        raise VideoError("video needs the 'av' package (pip install av)") from None
    return av


def _local(path) -> str:
    """A local path as the FFmpeg URL of that file: ``file:`` plus the absolute path, so a name
    such as ``my:clip.mp4`` or ``concat:a.ts|b.ts`` is a file name, never a protocol."""
    return "file:" + str(Path(path).resolve())


def _ffmpeg_message(e: Exception) -> str:
    """FFmpeg errors carry the file name and errno; keep only the reason, on one line."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())


# ----------------------------------------------------------------------------- sources

@dataclass
class VideoInfo:
    """What we know about a source before decoding it all."""
    path: Path
    kind: str                 # "video" or "folder"
    width: int
    height: int
    fps: Fraction
    n_frames: int             # exact for folders and most MP4s, estimated otherwise (0 = unknown)
    codec: str = ""
    audio_codec: str | None = None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    return sorted(files, key=_natural_key)


class FrameSource:
    """Iterate over the frames of a video file or an image folder.

    Opening checks the input and decodes the first frame, so a bad or empty input fails here,
    before any output exists. ``size`` (long side in pixels) resizes every frame; ``even=True``
    rounds the frame size to even numbers (needed by 4:2:0 video encoders).
    """

    def __init__(self, path, *, size: int | None = None, even: bool = False,
                 fps: float | Fraction | None = None):
        self.path = Path(path)
        self.size, self.even = size, even
        if not self.path.exists():
            raise VideoError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self._open_folder(fps)
        else:
            self._open_video()
        self.out_hw = _target_size((self.info.height, self.info.width), size, even)

    # -- opening
    def _open_folder(self, fps):
        self.files = frame_files(self.path)
        if not self.files:
            raise VideoError(f"{self.path}: folder holds no image frames "
                             f"({', '.join(IMAGE_EXTS)})")
        first = load_image(self.files[0])
        h, w = first.shape[-2:]
        rate = Fraction(fps).limit_denominator(100000) if fps else DEFAULT_FOLDER_FPS
        self.info = VideoInfo(self.path, "folder", w, h, rate, len(self.files))
        self._first = first

    def _open_video(self):
        av = _av()
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: empty file (0 bytes)")
        try:
            container = av.open(_local(self.path), "r")
        except av.EOFError:
            raise VideoError(f"{self.path}: video has no frames (no data before end of file)") \
                from None
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: not a video file FFmpeg can read "
                             f"({_ffmpeg_message(e)})") from None
        try:
            if not container.streams.video:
                raise VideoError(f"{self.path}: has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise VideoError(f"{self.path}: unsupported video codec (no decoder in this "
                                 f"FFmpeg build)")
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise VideoError(f"{self.path}: video stream has no frame rate")
            rate = Fraction(rate)
            n = int(stream.frames or 0)
            if n <= 0 and stream.duration and stream.time_base:
                n = round(float(stream.duration * stream.time_base * rate))
            elif n <= 0 and container.duration:
                n = round(container.duration / 1e6 * float(rate))
            audio = container.streams.audio[0] if container.streams.audio else None
            audio_codec = audio.codec_context.name if audio is not None and audio.codec_context \
                else (audio.codec.name if audio is not None else None)
            self._container, self._stream = container, stream
            self._frames = self._decode_frames()
            first = next(self._frames, None)
        except VideoError:
            container.close()
            raise
        except (av.FFmpegError, ValueError) as e:
            container.close()
            raise VideoError(f"{self.path}: cannot decode video ({_ffmpeg_message(e)})") from None
        if first is None:
            container.close()
            raise VideoError(f"{self.path}: video has no frames")
        limit = max_pixels_default()
        if first.width * first.height > limit:
            container.close()
            raise VideoError(f"{self.path}: {first.width}x{first.height} frames exceed the pixel "
                             f"guard of {limit / 1e6:.1f} MP")
        self.start_time = float(first.time) if first.time is not None else 0.0
        self._first = first
        self.info = VideoInfo(self.path, "video", stream.width or first.width,
                              stream.height or first.height, rate, n,
                              codec=stream.codec_context.name, audio_codec=audio_codec)

    def _decode_frames(self):
        yield from self._container.decode(self._stream)

    # -- reading
    def _to_tensor(self, frame) -> torch.Tensor:
        if isinstance(frame, torch.Tensor):
            t = frame
        else:
            a = frame.to_ndarray(format="rgb24")
            t = torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        return resize(t, self.out_hw)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self._first is None:
            raise VideoError(f"{self.path}: a FrameSource can be iterated only once")
        first, self._first = self._first, None
        yield self._to_tensor(first)
        if self.info.kind == "folder":
            for p in self.files[1:]:
                yield self._to_tensor(load_image(p))
            return
        av = _av()
        try:
            for frame in self._frames:
                yield self._to_tensor(frame)
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: cannot decode video ({_ffmpeg_message(e)})") from None
        finally:
            self.close()

    def close(self):
        c = getattr(self, "_container", None)
        if c is not None:
            c.close()
            self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _target_size(hw: tuple[int, int], size: int | None, even: bool) -> tuple[int, int]:
    h, w = hw
    size = validate.check_size(size)
    if size:  # None or 0: keep the input's size
        s = size / max(h, w)
        h, w = max(1, round(h * s)), max(1, round(w * s))
    if even:
        h, w = max(2, h - h % 2), max(2, w - w % 2)
    return h, w


def probe(path) -> VideoInfo:
    """Check a video file or frame folder and return its :class:`VideoInfo`."""
    src = FrameSource(path)
    src.close()
    return src.info


def read_frames(path, *, size: int | None = None) -> list[torch.Tensor]:
    """All frames of a (short) video or frame folder as a list of tensors."""
    with FrameSource(path, size=size) as src:
        return list(src)


# ----------------------------------------------------------------------------- sinks

def output_kind(path) -> str:
    """'video' for a known video extension, 'folder' for a folder path, else VideoError."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if p.is_dir() or ext == "" or str(path).endswith(os.sep):
        return "folder"
    if ext in IMAGE_EXTS:
        raise VideoError(f"{p}: give a folder (or a video file) as output, not an image file")
    raise VideoError(f"{p}: unknown video format {ext!r} (use one of {', '.join(VIDEO_EXTS)} "
                     f"or a folder)")


def check_parent(path: Path) -> None:
    """The output's folder exists and is writable (the output itself may be a folder)."""
    validate.check_output_parent(path, error=VideoError)


def check_output(path, inputs=()) -> Path:
    """Fail before any work if ``path`` (a video file or a frame folder) cannot be written or
    is one of the ``inputs`` (the input video or folder, the style images)."""
    path = validate.check_not_input(path, inputs, error=VideoError)
    kind = output_kind(path)
    if kind == "video":
        validate.check_output_file(path, error=VideoError)
    else:
        check_parent(path)
    return path


def resolve_codec(path, codec: str | None) -> str:
    """The PyAV encoder name for ``codec`` (or the container's default) in ``path``'s format."""
    av = _av()
    ext = Path(path).suffix.lower()
    if codec is None:
        codec = {".webm": "vp9", ".avi": "mpeg4"}.get(ext, "h264")
    if codec not in CODECS:
        raise VideoError(f"unsupported video codec {codec!r} (choose one of "
                         f"{', '.join(CODECS)})")
    name = CODECS[codec]
    try:
        av.codec.Codec(name, "w")
    except Exception:
        raise VideoError(f"video codec {codec!r} ({name}) is not available in this PyAV "
                         f"build") from None
    probe_c = av.open(os.devnull, "w", format=_muxer_for(ext))
    try:
        ok = name in probe_c.supported_codecs or codec in probe_c.supported_codecs
    finally:
        probe_c.close()
    if not ok:
        raise VideoError(f"video codec {codec!r} cannot be stored in a {ext} file")
    return name


def _muxer_for(ext: str) -> str:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
            ".webm": "webm", ".avi": "avi"}[ext]


# The writers' context-manager methods (shared as plain functions): a clean exit closes the
# writer (the output appears at its path), an exception aborts it (nothing is left there).
def _sink_enter(self):
    return self


def _sink_exit(self, exc_type, exc, tb):
    if exc_type is None:
        self.close()
    else:
        self.abort()


class VideoWriter:
    """Encode frames into a video file, copying the audio of ``audio_from``; atomic.

    Use as a context manager: on a clean exit the temporary file is renamed to ``path``; on an
    exception it is deleted and ``path`` is left untouched.
    """

    def __init__(self, path, fps, size: tuple[int, int], *, codec: str | None = None,
                 crf: int = 18, audio_from: Path | None = None, audio_start: float = 0.0):
        av = _av()
        self.path = Path(path)
        if output_kind(self.path) != "video":
            raise VideoError(f"{self.path}: not a video file name")
        check_parent(self.path)
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a directory")
        encoder = resolve_codec(self.path, codec)
        h, w = size
        if encoder != "mjpeg" and (h % 2 or w % 2):
            raise VideoError(f"frame size {w}x{h} must be even for {codec or 'h264'}")
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        ext = self.path.suffix.lower()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".tmp{ext}",
                                   dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.n = 0
        self._audio = None
        try:
            self.container = av.open(_local(self.tmp), "w", format=_muxer_for(ext))
            self.stream = self.container.add_stream(encoder, rate=self.fps)
            self.stream.width, self.stream.height = w, h
            self.stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
            self.stream.codec_context.time_base = 1 / self.fps
            if encoder in ("libx264", "libx265"):
                # "veryfast": at the same crf, files within a few per cent of "medium" in
                # size for stylised frames, at under half the encoding time
                self.stream.options = {"crf": str(crf), "preset": "veryfast"}
            elif encoder == "libvpx-vp9":
                self.stream.options = {"crf": str(crf + 13), "b": "0"}
            else:
                self.stream.bit_rate = 8_000_000
            if audio_from is not None:
                self._audio = _AudioCopier(audio_from, self.container, audio_start)
        except BaseException as e:
            self.abort()
            if isinstance(e, (av.FFmpegError, ValueError)):
                raise VideoError(f"{self.path}: cannot create video ({_ffmpeg_message(e)})") from None
            raise

    def write(self, frame: torch.Tensor) -> None:
        av = _av()
        f = frame[0].detach().float()
        if not math.isfinite(float(f.sum(dtype=torch.float64))):  # NaN/inf anywhere: so is the sum
            raise VideoError("a stylised frame contains NaN or infinite values; not writing it")
        a = f.clamp(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous()
        vf = av.VideoFrame.from_ndarray(a.cpu().numpy(), format="rgb24")
        if (vf.height, vf.width) != (self.stream.height, self.stream.width):
            raise VideoError(f"frame {self.n} is {vf.width}x{vf.height}, expected "
                             f"{self.stream.width}x{self.stream.height}")
        vf.pts = self.n
        vf.time_base = self.stream.codec_context.time_base
        try:
            self.container.mux(self.stream.encode(vf))
            self.n += 1
            if self._audio is not None:
                self._audio.copy_until(float(self.n / self.fps))
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: cannot encode video ({_ffmpeg_message(e)})") from None

    def close(self) -> Path:
        av = _av()
        if self.n == 0:
            self.abort()
            raise VideoError(f"{self.path}: no frames to write")
        try:
            self.container.mux(self.stream.encode(None))
            if self._audio is not None:
                self._audio.copy_until(None)
                self._audio.close()
            self.container.close()
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        except BaseException as e:
            self.abort()
            if isinstance(e, (av.FFmpegError, OSError)):
                raise VideoError(f"{self.path}: cannot write video ({_ffmpeg_message(e)})") from None
            raise
        return self.path

    def abort(self) -> None:
        for obj in (self._audio, getattr(self, "container", None)):
            try:
                if obj is not None:
                    obj.close()
            except Exception:
                pass
        self._audio = None
        try:
            self.tmp.unlink()
        except OSError:
            pass

    __enter__, __exit__ = _sink_enter, _sink_exit


class _AudioCopier:
    """Copies the first audio stream of ``src`` into ``out``, interleaved with the video.

    Packets are copied as they are when the output format accepts the codec; otherwise they are
    decoded and re-encoded with the format's default audio codec. ``start`` (seconds, the time
    of the first video frame) is subtracted so audio and video stay in sync.
    """

    def __init__(self, src: Path, out, start: float):
        av = _av()
        self.inp = av.open(_local(src), "r")
        if not self.inp.streams.audio:
            self.inp.close()
            self.inp, self.stream = None, None
            return
        ins = self.inp.streams.audio[0]
        name = ins.codec_context.name if ins.codec_context else ins.codec.name
        self.copy = name in out.supported_codecs
        if self.copy:
            self.stream = out.add_stream_from_template(ins)
            self.shift = round(start / ins.time_base) if ins.time_base else 0
        else:
            if ins.codec_context is None:
                raise VideoError(f"{src}: audio codec {name!r} can neither be copied into the "
                                 f"output nor decoded")
            self.stream = out.add_stream(out.default_audio_codec, rate=ins.codec_context.sample_rate)
            self.stream.layout = ins.codec_context.layout
            self.samples = 0
            self.skip = round(start * ins.codec_context.sample_rate)
        self.out = out
        self.ins = ins
        self.packets = self.inp.demux(ins)
        self.done = False

    def copy_until(self, t: float | None) -> None:
        """Mux source audio up to time ``t`` (seconds, output timeline); None = to the end."""
        if self.stream is None or self.done:
            return
        tb = self.ins.time_base
        for pkt in self.packets:
            if pkt.size == 0 or pkt.pts is None:
                continue
            if self.copy:
                pkt.pts -= self.shift
                if pkt.dts is not None:
                    pkt.dts -= self.shift
                pkt.stream = self.stream
                self.out.mux(pkt)
            else:
                self._transcode(pkt)
            if t is not None and float((pkt.pts + (pkt.duration or 0)) * tb) >= t:
                return
        if self.copy is False:
            self.out.mux(self.stream.encode(None))
        self.done = True

    def _transcode(self, pkt) -> None:
        for frame in pkt.decode():
            n = frame.samples
            if self.skip >= n:
                self.skip -= n
                continue
            # Samples before the first video frame are dropped whole-frame at a time.
            self.skip = 0
            frame.pts = self.samples
            frame.time_base = Fraction(1, frame.sample_rate)
            self.samples += n
            self.out.mux(self.stream.encode(frame))

    def close(self):
        if self.inp is not None:
            self.inp.close()
            self.inp = None


class FolderWriter:
    """Write frames as ``frame_000001.png``... into a new folder, atomically.

    Frames go into a temporary sibling folder that is renamed to ``path`` at the end; an existing
    ``path`` must be an empty folder (it is replaced).
    """

    def __init__(self, path, *, ext: str = ".png"):
        self.path = Path(path)
        check_parent(self.path)
        if self.path.exists():
            if not self.path.is_dir():
                raise VideoError(f"{self.path}: exists and is not a folder")
            if any(self.path.iterdir()):
                raise VideoError(f"{self.path}: output folder exists and is not empty")
        self.ext = ext
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                         dir=self.path.parent))
        self.n = 0

    def write(self, frame: torch.Tensor) -> None:
        self.n += 1
        save_image(frame, self.tmp / f"frame_{self.n:06d}{self.ext}")

    def close(self) -> Path:
        if self.n == 0:
            self.abort()
            raise VideoError(f"{self.path}: no frames to write")
        try:
            if self.path.is_dir():
                self.path.rmdir()
            os.chmod(self.tmp, 0o755)
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise VideoError(f"{self.path}: cannot write frames ({e})") from None
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    __enter__, __exit__ = _sink_enter, _sink_exit


def open_sink(path, source: FrameSource, *, codec: str | None = None, crf: int = 18,
              keep_audio: bool = True):
    """A :class:`VideoWriter` or :class:`FolderWriter` for ``path`` matching ``source``."""
    if output_kind(path) == "folder":
        if codec is not None:
            raise VideoError("--codec applies to video outputs, not frame folders")
        return FolderWriter(path)
    audio = source.path if (keep_audio and source.info.kind == "video"
                            and source.info.has_audio) else None
    return VideoWriter(path, source.info.fps, source.out_hw, codec=codec, crf=crf,
                       audio_from=audio, audio_start=getattr(source, "start_time", 0.0))


def write_frames(path, frames: Sequence[torch.Tensor], fps=DEFAULT_FOLDER_FPS, *,
                 codec: str | None = None, audio_from=None) -> Path:
    """Write a list of frames to a video file or a frame folder (atomically)."""
    if not frames:
        raise VideoError(f"{path}: no frames to write")
    if output_kind(path) == "folder":
        sink = FolderWriter(path)
    else:
        sink = VideoWriter(path, fps, tuple(frames[0].shape[-2:]), codec=codec,
                           audio_from=audio_from)
    with sink:
        for f in frames:
            sink.write(f)
    return Path(path)
