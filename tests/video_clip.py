"""Synthetic test clips for the video tests (built with PyAV, nothing read from disk)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from brushwork.core.protocol import Capabilities


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish random colour texture (H, W, 3) uint8 with structure for optical flow."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.float32)
    big = np.kron(small, np.ones((4, 4, 1), np.float32))[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 40 * np.sin(xx / 3.0 + yy / 5.0)[..., None]
    return np.clip(0.7 * big + 0.3 * 128 + stripes, 0, 255).astype(np.uint8)


def clip_frames(n: int = 10, w: int = 64, h: int = 48, square: int = 16,
                step: int = 2) -> list[np.ndarray]:
    """A textured square moving right by ``step`` px per frame over a static background."""
    bg = texture(h, w, 1)
    fg = texture(square, square, 2)
    frames = []
    for i in range(n):
        f = bg.copy()
        x0, y0 = 4 + step * i, (h - square) // 2
        f[y0:y0 + square, x0:x0 + square] = fg
        frames.append(f)
    return frames


def make_clip(path, n: int = 10, w: int = 64, h: int = 48, fps=12, *, audio: str | None = "aac",
              codec: str = "libx264", frames: list[np.ndarray] | None = None):
    """Write a clip with a 440 Hz tone (``audio`` = encoder name or None); returns the path."""
    import av

    frames = clip_frames(n, w, h) if frames is None else frames
    fps = Fraction(fps)
    with av.open(str(path), "w") as oc:
        vs = oc.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            vs.options = {"crf": "10"}
        aus = None
        if audio:
            aus = oc.add_stream(audio, rate=16000)
            aus.layout = "mono"
        oc.start_encoding()  # so that a clip without frames still gets a header
        for i, a in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(a, format="rgb24")
            vf.pts = i
            oc.mux(vs.encode(vf))
        oc.mux(vs.encode())
        if aus is not None:
            t = np.arange(int(16000 * max(len(frames), 6) / fps)) / 16000
            x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            oc.mux(aus.encode(af))
            oc.mux(aus.encode())
    return path


def stream_facts(path) -> dict:
    """Frame count (decoded), rate, size and audio facts of a video file."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        n = sum(1 for _ in c.decode(v))
        facts = {"frames": n, "fps": v.average_rate, "size": (v.width, v.height)}
    if a is not None:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(a))
            facts.update(audio_codec=a.codec_context.name, audio_rate=a.codec_context.sample_rate,
                         audio_seconds=samples / a.codec_context.sample_rate)
    else:
        facts["audio_codec"] = None
    return facts


class Flicker:
    """Toy method: content mixed with fresh noise on every call (a flickering stylisation)."""
    name = "flicker"
    controls = {}
    capabilities = Capabilities()

    def __init__(self):
        self.calls = 0

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None):
        g = torch.Generator().manual_seed(1000 * (seed or 0) + self.calls)
        self.calls += 1
        return (0.6 * content + 0.4 * torch.rand(content.shape, generator=g)).clamp(0, 1)
