"""Colour helpers: luminance/chroma split (YIQ) and colour statistics matching."""
from __future__ import annotations

import torch

from .losses import sqrtm_psd

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
    ms, ss = style_y.mean(), style_y.std().clamp_min(1e-6)
    mc, sc = content_y.mean(), content_y.std()
    return ((style_y - ms) / ss * sc + mc).clamp(0, 1)


def combine_luminance(stylised_y: torch.Tensor, content_rgb: torch.Tensor) -> torch.Tensor:
    """The stylised luminance with the content's chroma (I, Q), back to RGB in [0, 1]."""
    yiq = rgb_to_yiq(content_rgb)
    return yiq_to_rgb(torch.cat([stylised_y, yiq[:, 1:]], 1)).clamp(0, 1)


def match_color(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Recolour ``source`` so its RGB mean and covariance match ``reference``'s.

    x' = C_r^1/2 C_s^-1/2 (x - mu_s) + mu_r with symmetric matrix square roots (the linear
    colour transfer Gatys et al. 2017 use to colour-match the style to the content).
    """
    def stats(x):
        f = x.reshape(3, -1).double()
        mu = f.mean(1, keepdim=True)
        fc = f - mu
        return f, mu, fc @ fc.T / f.shape[1] + 1e-5 * torch.eye(3, dtype=f.dtype)

    fs, mu_s, cov_s = stats(source[0])
    _, mu_r, cov_r = stats(reference[0])
    a = sqrtm_psd(cov_r) @ torch.linalg.inv(sqrtm_psd(cov_s))
    out = a @ (fs - mu_s) + mu_r
    return out.reshape(source.shape).to(source.dtype).clamp(0, 1)


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
