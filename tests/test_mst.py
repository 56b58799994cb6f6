"""MST: k-means, the graph cut, per-mode whitening-colouring, the method end to end."""
import pytest
import torch

from brushwork.cli import main
from brushwork.errors import ControlError
from brushwork.methods import mst

from _arbitrary_util import noise_png


def _changes(labels):
    """Neighbour pairs (4-connectivity) with different labels."""
    return int((labels[1:] != labels[:-1]).sum() + (labels[:, 1:] != labels[:, :-1]).sum())


def test_kmeans_finds_three_separated_blobs():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0], [0.0, 12.0, -6.0]])
    truth = torch.arange(3).repeat_interleave(torch.tensor([30, 50, 20]))
    x = means[truth] + 0.5 * torch.randn(100, 3, generator=g)
    centres, labels = mst.kmeans(x, 3, seed=1)
    assert centres.shape == (3, 3)
    # the same partition up to renumbering, and centres at the blob means
    for k in range(3):
        assert labels[truth == k].unique().numel() == 1
    assert labels.unique().numel() == 3
    order = [int(labels[truth == k][0]) for k in range(3)]
    assert torch.allclose(centres[order].float(), means, atol=0.3)
    again = mst.kmeans(x, 3, seed=1)
    assert torch.equal(again[1], labels) and torch.equal(again[0], centres)


def test_kmeans_drops_empty_clusters_of_duplicate_points():
    x = torch.tensor([[1.0, 2.0]] * 5 + [[4.0, 0.0]] * 5)
    centres, labels = mst.kmeans(x, 4)
    assert centres.shape[0] == 2 and set(labels.tolist()) == {0, 1}


def test_graph_cut_without_smoothness_is_the_argmin():
    cost = torch.rand(9, 11, 4, generator=torch.Generator().manual_seed(2)).double()
    assert torch.equal(mst.graph_cut(cost, 0.0), cost.argmin(-1))


def test_potts_term_removes_label_noise():
    g = torch.Generator().manual_seed(3)
    truth = torch.zeros(16, 16, dtype=torch.long)
    truth[:, 8:] = 1
    cost = torch.stack([truth.double(), 1 - truth.double()], -1) * 0.3
    cost = cost + 0.5 * torch.rand(16, 16, 2, generator=g).double()  # flips many argmins
    noisy = cost.argmin(-1)
    smooth = mst.graph_cut(cost, 0.5)
    assert _changes(noisy) > 20
    assert _changes(smooth) < _changes(noisy) / 3
    assert (smooth == truth).float().mean() > (noisy == truth).float().mean()


def test_small_labels_move_to_their_next_best():
    cost = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]],
                         [[1.0, 0.0, 0.5], [2.0, 1.0, 0.0]]]).double()
    labels = torch.tensor([[0, 0], [1, 2]])
    out = mst.drop_small_labels(labels, cost, torch.ones(2, 2, dtype=torch.bool))
    # label 1 and label 2 each hold one position: the smallest goes first, then the other
    assert (torch.bincount(out.flatten(), minlength=3) != 1).all()
    assert out[0].tolist() == [0, 0]


def test_each_mode_gets_its_style_clusters_mean():
    g = torch.Generator().manual_seed(4)
    c, h, w = 6, 8, 10
    content = torch.randn(1, c, h, w, generator=g)
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, 5:] = 1
    style = torch.randn(1, c, 6, 6, generator=g)
    s_labels = (torch.arange(36) >= 20).long()
    style.view(c, -1)[:, 20:] += 7.0
    out = mst.mode_wct(content, style, labels, s_labels)
    for k in range(2):
        got = out[0][:, labels == k].double().mean(1)
        want = style[0].flatten(1)[:, s_labels == k].double().mean(1)
        assert torch.allclose(got, want, atol=1e-4)
    region = torch.ones(h, w, dtype=torch.bool)
    region[0] = False
    part = mst.mode_wct(content, style, labels, s_labels, region)
    assert torch.equal(part[..., 0, :], content[..., 0, :])
    assert not torch.allclose(part[..., 1:, :], content[..., 1:, :])


def test_cosine_cost_is_one_minus_cosine():
    feat = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 1, 2)  # (1, 0) and (0, 0)
    cost = mst.cosine_cost(feat, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert torch.allclose(cost[0, 0], torch.tensor([0.0, 1 - 2 ** -0.5]).double())
    assert torch.allclose(cost[0, 1], torch.ones(2).double())


@pytest.fixture(scope="module")
def method():
    return mst.MST()


def test_one_cluster_is_wct(method, content_img, style_img):
    from brushwork.methods.wct import WCT
    out = method.stylize(content_img, [style_img], controls={"clusters": 1,
                                                              "decoder": "cascade"})
    ref = WCT().stylize(content_img, [style_img])
    assert torch.allclose(out, ref, atol=1e-5)


def test_output_shape_range_and_determinism(method, content_img, style_img, style_img2):
    controls = {"clusters": 3, "smoothness": 0.05}
    out = method.stylize(content_img, [style_img2], controls=controls)
    assert out.shape == content_img.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, method.stylize(content_img, [style_img2], controls=controls))
    wct1 = method.stylize(content_img, [style_img2], controls={"clusters": 1})
    assert (out - wct1).abs().mean() > 1e-3  # the sub-styles change the result
    two = method.stylize(content_img, [style_img, style_img2], style_weights=[0.5, 0.5],
                         controls={"levels": ["4", "1"]})
    assert two.shape == content_img.shape


def test_skip_decoder_renders_once_through_avatars_decoder(method, content_img, style_img):
    from brushwork.methods.avatar import Avatar
    # strength 0: the content's features through avatar's decoder with its own statistics
    zero = method.stylize(content_img, [style_img], controls={"decoder": "skip", "strength": 0})
    assert torch.allclose(zero, Avatar().reconstruct(content_img), atol=1e-5)
    skip = method.stylize(content_img, [style_img], controls={"decoder": "skip"})
    cascade = method.stylize(content_img, [style_img], controls={"decoder": "cascade"})
    assert skip.shape == content_img.shape and (skip - cascade).abs().mean() > 1e-3
    assert (skip - zero).abs().mean() > 1e-2  # the sub-styles' statistics are in it
    with pytest.raises(ControlError, match="levels applies to decoder=cascade"):
        method.stylize(content_img, [style_img], controls={"decoder": "skip", "levels": ["4"]})
    with pytest.raises(ControlError, match="not one of"):
        method.stylize(content_img, [style_img], controls={"decoder": "fancy"})
    # auto: levels select the cascade
    lv = {"levels": ["4", "1"]}
    torch.testing.assert_close(method.stylize(content_img, [style_img], controls=lv),
                               method.stylize(content_img, [style_img],
                                              controls={**lv, "decoder": "cascade"}))


@pytest.mark.parametrize("value,needle", [("0", "minimum"), ("100000", "maximum"),
                                          ("40", "feature positions")])
def test_bad_clusters_refused_in_one_line(value, needle, tmp_path, capsys):
    content, style = noise_png(tmp_path / "c.png", (24, 20), 0), noise_png(tmp_path / "s.png", (32, 32), 1)
    out = tmp_path / "out.png"
    code = main(["stylize", content, "-s", style, "-m", "mst", "-o", str(out), "--size", "0",
                 "-q", "--clusters", value])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("brushwork: error:") and needle in lines[0]
