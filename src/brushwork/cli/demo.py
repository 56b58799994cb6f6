"""Bundled demo inputs: a photo from scikit-image and a painting brushwork paints itself.

The style image is generated: short curved brush strokes that follow a field of swirls, in a
night-sky palette, so the demo needs no file from outside the installed packages.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PALETTE = [(20, 38, 92), (33, 64, 140), (60, 100, 170), (96, 140, 200), (230, 200, 80),
           (245, 225, 120), (16, 24, 50), (120, 160, 190), (200, 120, 40)]


def swirl_painting(size: int = 384, seed: int = 0) -> Image.Image:
    """A deterministic 'painting': strokes along a vortex field, thick paint texture."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), PALETTE[0])
    draw = ImageDraw.Draw(im)
    centers = rng.uniform(0, size, (5, 2))
    spins = rng.choice([-1.0, 1.0], 5) * rng.uniform(0.5, 1.5, 5)

    def field(x, y):
        vx, vy = 0.3, 0.05  # a gentle drift plus vortices
        for (cx, cy), s in zip(centers, spins):
            dx, dy = x - cx, y - cy
            r2 = dx * dx + dy * dy + 200.0
            vx += -s * dy / r2 * 60
            vy += s * dx / r2 * 60
        n = math.hypot(vx, vy) + 1e-6
        return vx / n, vy / n

    for layer in range(3):
        for _ in range(1400):
            x, y = rng.uniform(0, size, 2)
            # brighter colours near vortex centres, dark blues elsewhere
            d = min(math.hypot(x - cx, y - cy) for cx, cy in centers) / size
            pick = rng.integers(4, 6) if d < 0.08 and rng.random() < 0.8 else rng.integers(0, 9)
            base = np.array(PALETTE[pick], float) + rng.normal(0, 12, 3)
            col = tuple(int(v) for v in np.clip(base, 0, 255))
            width = int(rng.integers(3, 7)) - layer
            pts = [(x, y)]
            for _ in range(int(rng.integers(4, 10))):
                vx, vy = field(x, y)
                x, y = x + vx * 4, y + vy * 4
                pts.append((x, y))
            draw.line(pts, fill=col, width=max(2, width), joint="curve")
    return im.filter(ImageFilter.SMOOTH_MORE)


def demo_content() -> Image.Image:
    """Chelsea the cat, from scikit-image's bundled sample data."""
    from skimage import data
    return Image.fromarray(data.chelsea())
