"""Shared building blocks (brushwork.blocks) not covered by the method tests."""
import pytest
import torch
import torch.nn.functional as F


@pytest.mark.parametrize("channels_last", [False, True])
def test_reflect_pad_matches_torch(channels_last):
    from brushwork.core.blocks import ReflectPad1
    x = torch.randn(2, 5, 7, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    ours, ref = ReflectPad1()(y), F.pad(y, (1, 1, 1, 1), mode="reflect")
    assert ours.shape == (2, 5, 9, 8) and torch.equal(ours, ref)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    g1, = torch.autograd.grad(ours.pow(2).sum(), x)
    g2, = torch.autograd.grad(ref.pow(2).sum(), x)
    assert torch.allclose(g1, g2)


def _swap_by_hand(cf, sf, k, stride):
    """Style swap written out position by position: for each content patch the style patch
    (corner every ``stride`` positions) with the highest dot product over the style patch's
    norm, its values added into every position it covers, then divided by the cover count."""
    from brushwork.core.blocks import pad_for_patches
    c, h, w = cf.shape[1:]
    cp, sp = pad_for_patches(cf, k // 2)[0], pad_for_patches(sf, k // 2)[0]
    corners = [(y, x) for y in range(0, sp.shape[1] - k + 1, stride)
               for x in range(0, sp.shape[2] - k + 1, stride)]
    summed, count = torch.zeros_like(cp), torch.zeros_like(cp[:1])
    for y in range(h):
        for x in range(w):
            patch = cp[:, y:y + k, x:x + k]
            scores = [float((patch * sp[:, a:a + k, b:b + k]).sum()
                            / sp[:, a:a + k, b:b + k].norm()) for a, b in corners]
            a, b = corners[max(range(len(scores)), key=scores.__getitem__)]
            summed[:, y:y + k, x:x + k] += sp[:, a:a + k, b:b + k]
            count[:, y:y + k, x:x + k] += 1
    p = k // 2
    return (summed / count)[None, :, p:p + h, p:p + w]


@pytest.mark.parametrize("k,stride,chunk", [(3, 1, 4096), (5, 2, 9), (1, 1, 4), (3, 2, 4096)])
def test_style_swap_matches_the_patch_by_patch_definition(k, stride, chunk):
    from brushwork.core.blocks import style_swap
    g = torch.Generator().manual_seed(k * 10 + stride)
    cf = torch.randn(1, 6, 7, 9, generator=g).relu()
    sf = torch.randn(1, 6, 8, 6, generator=g).relu() + 0.1
    out = style_swap(cf, sf, k, stride, chunk=chunk)
    assert out.shape == cf.shape
    assert torch.allclose(out, _swap_by_hand(cf, sf, k, stride), atol=1e-6)
