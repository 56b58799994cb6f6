"""Deep painterly harmonisation: the painting outside the dilated mask is untouched, the pasted
object moves toward the painting's style, the mapping and its consistency, and the CLI's
refusals."""
import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core import stats as S
from brushwork.core.vgg import VGG19
from brushwork.methods import harmonize as hz

N = 48


def _painting():
    """Blue/yellow diagonal stripes with a gradient: a strongly textured 'painting'."""
    y, x = np.mgrid[0:N, 0:N]
    s = (np.sin((x + y) / 2.0) > 0)[..., None]
    rgb = np.where(s, [230, 200, 40], [30, 50, 160]) + np.stack([x, y, x + y], -1) * 0.5
    return torch.from_numpy(rgb.clip(0, 255) / 255).permute(2, 0, 1)[None].float()


def _paste(painting):
    mask = torch.zeros(1, 1, N, N)
    mask[..., 16:32, 16:32] = 1
    comp = painting.clone()
    comp[..., 16:32, 16:32] = torch.tensor([0.9, 0.2, 0.2])[:, None, None]  # flat red square
    return comp, mask


@pytest.fixture(scope="module")
def enc():
    return VGG19(last_layer="relu5_1")


@pytest.fixture(scope="module")
def result(enc):
    p = _painting()
    comp, mask = _paste(p)
    out = hz.harmonize(p, comp, mask, steps=6, size=40, dilate=4, encoder=enc)
    return p, comp, mask, out


def test_outside_dilated_mask_is_the_painting(result):
    p, _, mask, out = result
    outside = hz.dilate_mask(mask, 4) == 0
    assert out.shape == p.shape
    assert (out - p).abs().amax(1, keepdim=True)[outside].max() <= 1 / 255
    assert (out - p).abs().max() > 0.05  # and the inside did change


def test_style_distance_drops_inside_the_mask(result, enc):
    p, comp, mask, out = result
    layers = ["relu2_1", "relu3_1"]
    fp = enc(p, layers)

    def dist(img):
        f = enc(img, layers)
        return sum(float((S.gram(f[n], mask) - S.gram(fp[n])).pow(2).mean()) for n in layers)

    assert dist(out) < 0.7 * dist(comp)


def test_mapping_a_feature_map_onto_itself_is_the_identity():
    torch.manual_seed(0)
    f = torch.randn(1, 8, 7, 9)
    idx = hz.nearest_patches(f, f)
    assert torch.equal(idx, torch.arange(63))
    pos = torch.tensor([0, 10, 40, 62])
    assert torch.equal(hz.nearest_patches(f, f, pos, chunk=2), pos)


def _shift_map(h, w, dy, dx):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([yy + dy, xx + dx], -1)


def test_consistency_keeps_a_constant_shift():
    m = _shift_map(6, 7, 2, 1)
    assert torch.equal(hz.consistent_mapping(m, style_hw=(10, 10)), m)


def test_consistency_fixes_a_single_outlier():
    m = _shift_map(6, 7, 2, 1)
    bad = m.clone()
    bad[3, 4] = torch.tensor([0, 9])
    assert torch.equal(hz.consistent_mapping(bad, style_hw=(10, 10)), m)


def test_carry_mapping_rescales_the_shift():
    m = _shift_map(3, 3, 1, 0)  # relu4_1: one position down
    out = hz.carry_mapping(m, "relu4_1", "relu3_1", (6, 6), (8, 8))
    assert torch.equal(out, _shift_map(6, 6, 2, 0).clamp(max=7))


# ---------------------------------------------------------------------------- the CLI
def _save(t, path):
    a = (t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).save(path)
    return str(path)


@pytest.fixture()
def files(tmp_path):
    p = _painting()
    comp, mask = _paste(p)
    return {"painting": _save(p, tmp_path / "p.png"), "paste": _save(comp, tmp_path / "c.png"),
            "mask": _save(mask.expand(1, 3, N, N), tmp_path / "m.png"), "dir": tmp_path}


def _run(capsys, painting, paste, mask, out, *extra):
    code = main(["harmonize", painting, "--paste", paste, "--mask", mask, "-o", str(out),
                 "-q", "--steps", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _refused(capsys, files, out=None, **swap):
    f = {**files, **swap}
    out = out or files["dir"] / "out.png"
    code, err = _run(capsys, f["painting"], f["paste"], f["mask"], out)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("brushwork: error: "), err
    if str(out) not in (f["painting"], f["paste"], f["mask"]):
        assert not out.exists()
    return err[0]


def test_cli_missing_and_corrupt_files(capsys, files):
    _refused(capsys, files, painting=str(files["dir"] / "nope.png"))
    bad = files["dir"] / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _refused(capsys, files, paste=str(bad))
    _refused(capsys, files, mask=str(bad))


def test_cli_paste_of_another_size(capsys, files):
    small = _save(_painting()[..., :40, :44], files["dir"] / "small.png")
    msg = _refused(capsys, files, paste=small)
    assert "44x40" in msg and "48x48" in msg
    big = _save(torch.rand(1, 3, 60, 60), files["dir"] / "big.png")
    msg = _refused(capsys, files, paste=big)
    assert "larger" in msg and "60x60" in msg and "48x48" in msg


def test_cli_mask_of_another_size_empty_or_full(capsys, files):
    d = files["dir"]
    msg = _refused(capsys, files, mask=_save(torch.ones(1, 3, 24, 24), d / "m24.png"))
    assert "24x24" in msg
    assert "nothing" in _refused(capsys, files, mask=_save(torch.zeros(1, 3, N, N), d / "z.png"))
    assert "whole" in _refused(capsys, files, mask=_save(torch.ones(1, 3, N, N), d / "o.png"))


def test_cli_output_equal_to_an_input_or_unwritable(capsys, files):
    for k in ("painting", "paste", "mask"):
        before = open(files[k], "rb").read()
        _refused(capsys, files, out=files["dir"] / files[k].rsplit("/", 1)[1])
        assert open(files[k], "rb").read() == before
    _refused(capsys, files, out=files["dir"] / "no_such_dir" / "out.png")
    _refused(capsys, files, out=files["dir"] / "out.unknown")


def test_cli_writes_the_result(capsys, files):
    out = files["dir"] / "out.png"
    code, err = _run(capsys, files["painting"], files["paste"], files["mask"], out,
                     "--size", "32", "--dilate", "2")
    assert code == 0, err
    a = np.asarray(Image.open(out))
    assert a.shape == (N, N, 3)
