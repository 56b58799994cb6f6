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
