"""Colour helpers: luminance/chroma split (YIQ) and colour preservation (its statistics:
:func:`brushwork.core.stats.match_color` and :func:`brushwork.core.stats.mean_std`)."""
from __future__ import annotations

import torch

from .stats import match_color, mean_std

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114],
                         [0.595716, -0.274453, -0.321263],
                         [0.211456, -0.522591, 0.311135]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB2YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _YIQ2RGB.to(x), x)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma."""
    return rgb_to_yiq(x)[:, :1]


def gray3(y: torch.Tensor) -> torch.Tensor:
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Gatys et al. 2017 colour preservation: give the style's luminance the content's mean/std."""
    ms, ss = mean_std(style_y, eps=0, unbiased=True, keepdim=True)
    mc, sc = mean_std(content_y, eps=0, unbiased=True, keepdim=True)
    return ((style_y - ms) / ss.clamp_min(1e-6) * sc + mc).clamp(0, 1)


def combine_luminance(stylised_y: torch.Tensor, content_rgb: torch.Tensor) -> torch.Tensor:
    """The stylised luminance with the content's chroma (I, Q), back to RGB in [0, 1]."""
    yiq = rgb_to_yiq(content_rgb)
    return yiq_to_rgb(torch.cat([stylised_y, yiq[:, 1:]], 1)).clamp(0, 1)


def preserve_color_inputs(content: torch.Tensor, styles: list[torch.Tensor], mode: str | None):
    """The ``preserve_color`` control applied to a method's inputs.

    ``histogram``: each style colour-matched to the content. ``luminance``: content and styles
    reduced to (3-channel) luminance, the styles' matched to the content's; the result's chroma
    comes back later with ``combine_luminance(luminance(out), content_rgb)``.
    Returns (content to stylise, styles, content_rgb or None)."""
    if mode == "histogram":
        return content, [match_color(s, content) for s in styles], None
    if mode == "luminance":
        cy = luminance(content)
        return gray3(cy), [gray3(match_luminance(luminance(s), cy)) for s in styles], content
    return content, styles, None
