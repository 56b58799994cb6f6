"""Large images tile by tile (core/tiling.py, the methods' tiled paths, api's tile/max_memory):
windows and feathered weights, the memory planner, frozen thumbnail statistics, seams.
Tiny images (48-200 px) with tiny forced tiles; no ../shared."""
import argparse
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import brushwork.api
from brushwork.api import get_stylizer, stylize_tensors
from brushwork.core import stats as S, tiling, validate
from brushwork.errors import BrushworkError, ControlError, ResourceError
from brushwork.methods import METHODS


@pytest.fixture(autouse=True)
def fp32(monkeypatch):
    """fp32 results (bf16 off) and no method instance made with bf16 reused."""
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    monkeypatch.setattr(brushwork.api, "_instances", {})


def photo(h=128, w=160):
    from skimage import data
    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(h, w), mode="area")


def synthetic(h=128, w=160, seed=0):
    """Ramps and soft colour blobs: no structure that lines up with tile borders."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([yy, xx, (1 - yy) * xx])[None]
    blobs = F.interpolate(torch.rand(1, 3, h // 16, w // 16, generator=g), size=(h, w),
                          mode="bicubic", align_corners=False)
    return (0.5 * base + 0.5 * blobs).clamp(0, 1)


def painting(h=96, w=128):
    from skimage import data
    x = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(h, w), mode="area")


def grid_seam(out, method, options, tile, controls=None):
    """Seam ratio of ``out`` at the borders of the grid a ``tile`` px run of ``method`` uses."""
    from brushwork.core.protocol import begin
    from brushwork.core.vgg import LAYER_STRIDE
    st = get_stylizer(method, "cpu", **options)
    c, _ = begin(st, [out], None, {**st.control_defaults, **(controls or {})})
    passes = st.passes(c)
    mult = max(LAYER_STRIDE[layer] for p in passes for layer in p.layers)
    hw = tuple(out.shape[-2:])
    b = min(16, hw[0] - 1, hw[1] - 1) if st.border else 0
    plan = st.tile_plan(hw, passes, 1, tile, None, b, mult)
    g = tiling.tile_grid(plan.hv, plan.wv, plan.tile, margin=plan.margin, feather=plan.feather,
                         align=plan.mult)
    assert len(g) > 1
    return tiling.seam_ratio(out, [v - b for v in g.borders_y], [v - b for v in g.borders_x])


# ------------------------------------------------------------------- windows and weights
@pytest.mark.parametrize("n,tile,margin,feather,align", [
    (100, 40, 3, 8, 1), (1000, 256, 16, 64, 8), (257, 64, 4, 10, 4), (64, 64, 8, 16, 1),
    (130, 48, 4, 8, 16), (4032, 2048, 32, 64, 4)])
def test_feather_weights_sum_to_one(n, tile, margin, feather, align):
    tile = max(align, tile // align * align)
    n_al = -(-n // align) * align
    windows = tiling.spans(n_al, tile, 2 * margin + feather, align)
    assert windows[0][0] == 0 and windows[-1][1] == n_al
    assert all(s % align == 0 for s, _ in windows)
    for (s0, e0), (s1, e1) in zip(windows, windows[1:]):
        assert s0 < s1 and e0 - s1 >= 2 * margin + feather  # overlap as asked
    ws = tiling.blend_weights(windows, n_al, margin, feather)
    total = torch.zeros(n_al)
    for (s, e), wt in zip(windows, ws):
        assert wt.shape == (e - s,) and float(wt.min()) >= 0 and float(wt.max()) <= 1
        total[s:e] += wt
    torch.testing.assert_close(total, torch.ones(n_al), atol=1e-6, rtol=0)
    for i, ((s, e), wt) in enumerate(zip(windows, ws)):  # no weight in the inner margins
        if i > 0 and margin:
            assert float(wt[:margin].abs().max()) == 0
        if i < len(windows) - 1 and margin:
            assert float(wt[-margin:].abs().max()) == 0


def test_grid_weights_are_a_partition_of_unity():
    g = tiling.tile_grid(96, 136, 48, margin=4, feather=8, align=8)
    total = torch.zeros(1, 3, 96, 136)
    for t in g:
        tiling.add_tile(total, torch.ones(1, 3, t.y1 - t.y0, t.x1 - t.x0), t)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    assert len(g.borders_y) == len({t.y0 for t in g}) - 1


def test_read_window_reflects_past_the_edges():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    padded = F.pad(x, (3, 3, 3, 3), mode="reflect")
    w = tiling.read_window(x, -3, 4, 2, 10, 0, 0)  # virtual rows -3..3, columns 2..9
    torch.testing.assert_close(w, padded[..., 0:7, 5:13])
    w = tiling.read_window(x, 0, 11, 0, 13, 3, 3)  # the image starts at (3, 3)
    torch.testing.assert_close(w, padded)


# ------------------------------------------------------------------ memory and planner
def test_parse_memory():
    g = 1024 ** 3
    assert tiling.parse_memory("4G") == 4 * g
    assert tiling.parse_memory("512M") == 512 * 1024 ** 2
    assert tiling.parse_memory("1.5GiB") == int(1.5 * g)
    assert tiling.parse_memory("800mb") == 800 * 1024 ** 2
    assert tiling.parse_memory(" 2048 ") == 2048 and tiling.parse_memory(4096) == 4096
    for bad in ("", "four", "4X", "-1G", "0", 0, -5, True, float("inf"), [4]):
        with pytest.raises(ControlError):
            tiling.parse_memory(bad)


def test_argparse_types():
    assert validate.tile_arg("auto") == "auto" and validate.tile_arg("AUTO") == "auto"
    assert validate.tile_arg("512") == 512
    assert validate.memory_arg("4G") == 4 * 1024 ** 3
    for bad in ("8", "big", "99999999", "-64"):
        with pytest.raises(argparse.ArgumentTypeError):
            validate.tile_arg(bad)
    for bad in ("lots", "0", "-2G"):
        with pytest.raises(argparse.ArgumentTypeError):
            validate.memory_arg(bad)
    assert validate.check_tile(None) is None and validate.check_max_memory(None) is None


def test_default_max_memory_is_a_share_of_what_is_free():
    rss, avail = tiling.process_rss(), tiling.available_memory()
    d = tiling.default_max_memory()
    assert rss > 0 and d > rss
    if avail is not None:
        assert d <= rss + avail


def test_planner_picks_the_largest_tile_that_fits_and_refuses_below_the_smallest():
    bpp, fixed = 100, 10_000_000
    side = tiling.plan_tiles(8000, 12000, bpp, fixed + bpp * 1000 * 1000, fixed=fixed, align=16)
    assert side % 16 == 0 and side <= 1000 and bpp * (side + 16) ** 2 > bpp * 1000 * 1000
    assert tiling.plan_tiles(300, 200, bpp, 10 ** 12) == 2048  # capped; the window is the image
    with pytest.raises(ResourceError) as e:
        tiling.plan_tiles(8000, 12000, bpp, fixed + bpp * 100 * 100, fixed=fixed)
    msg = str(e.value)
    assert "\n" not in msg and "too small" in msg and "12000x8000" in msg


def test_api_refuses_a_max_memory_no_tile_fits():
    with pytest.raises(ResourceError) as e:
        stylize_tensors(photo(), [painting()], "adain", method_options={"encoder": "small"},
                        max_memory="1M")
    assert "\n" not in str(e.value) and "max memory 1.0 MiB is too small" in str(e.value)
    with pytest.raises(ResourceError):
        stylize_tensors(photo(), [painting()], "gatys", controls={"steps": 1}, tile=48,
                        max_memory=1 << 20)
    with pytest.raises(ResourceError):
        stylize_tensors(photo(), [], "johnson", tile="auto", max_memory="2M")


def test_api_checks_tile_and_max_memory():
    for bad in ("huge", 8, -64, 2.5, 10 ** 6):
        with pytest.raises(ControlError):
            stylize_tensors(photo(), [painting()], "adain", tile=bad)
    with pytest.raises(ControlError):
        stylize_tensors(photo(), [painting()], "adain", max_memory="lots")


# ------------------------------------------------------------------- frozen statistics
def test_fit_recovers_affine_and_monotone_maps_and_rejects_others():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 8, 20, 24, generator=g) * torch.linspace(0.5, 3, 8)[None, :, None, None]
    s = torch.rand(1, 8, 12, 12, generator=g) * 2 + 1
    flat = x[0].flatten(1)
    for y in (S.adain(x, s), S.wct(x, s)):
        fm = tiling.fit_frozen_map(flat, y[0].flatten(1))
        assert fm is not None and fm.kind == "affine"
        torch.testing.assert_close(fm(x), y, atol=1e-4, rtol=1e-4)
    # the frozen map applies the thumbnail's statistics to any other features
    fm = tiling.fit_frozen_map(flat, S.adain(x, s)[0].flatten(1))
    c_mean, c_std = S.mean_std(x, keepdim=True)
    s_mean, s_std = S.mean_std(s, keepdim=True)
    other = x[..., :7, :9] * 1.3 + 0.2
    torch.testing.assert_close(fm(other), (other - c_mean) / c_std * s_std + s_mean,
                               atol=1e-4, rtol=1e-4)
    mono = tiling.fit_frozen_map(flat, torch.sqrt(flat) * 2 + flat ** 3)
    assert mono is not None and mono.kind == "monotone"
    shifted = torch.roll(x, 3, -1)[0].flatten(1)  # not a function of each position's features
    assert tiling.fit_frozen_map(flat, shifted) is None


def test_adain_tiles_with_thumbnail_statistics_match_the_whole_image_without_seams(monkeypatch):
    s, opts = painting(), {"encoder": "small"}
    for c in (photo(), synthetic()):
        whole = stylize_tensors(c, [s], "adain", method_options=opts)
        tiled = stylize_tensors(c, [s], "adain", method_options=opts, tile=96)
        assert tiled.shape == whole.shape and 0 <= float(tiled.min()) <= float(tiled.max()) <= 1
        diff = (tiled - whole).abs()
        assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.05
    assert grid_seam(tiled, "adain", opts, 96) <= 1.1  # the synthetic image
    # each tile's own statistics instead (the thumbnail's not frozen): far from the whole image
    monkeypatch.setattr(tiling, "fit_frozen_map", lambda x, y: None)
    own = stylize_tensors(c, [s], "adain", method_options=opts, tile=96)
    assert float((own - whole).abs().mean()) > 10 * float(diff.mean())


def test_wct_and_linear_tiles_match_the_whole_image():
    # wct: four passes from relu4_1 (stride 8, 128 channels: the image needs 4 x 129 feature
    # positions for the frozen map), whose reach exceeds these tiny tiles' margins
    s = painting()
    for method, opts, c, tile, tol in (("wct", {"encoder": "small"}, photo(192, 224), 128, 0.015),
                                       ("linear", {}, photo(), 96, 1e-3)):
        whole = stylize_tensors(c, [s], method, method_options=opts)
        tiled = stylize_tensors(c, [s], method, method_options=opts, tile=tile)
        assert float((tiled - whole).abs().mean()) < tol, method


def test_tiled_masks_and_style_weights():
    c, s1, s2 = photo(), painting(), photo(80, 80).flip(1)
    left = torch.zeros(1, 1, 128, 160)
    left[..., :70] = 1
    opts = {"encoder": "small"}
    for controls in ({"masks": [left, 1 - left]}, {"strength": 0.6}):
        whole = stylize_tensors(c, [s1, s2], "adain", method_options=opts, controls=controls)
        tiled = stylize_tensors(c, [s1, s2], "adain", method_options=opts, controls=controls,
                                tile=96)
        assert float((tiled - whole).abs().mean()) < 2e-3
    whole = stylize_tensors(c, [s1], "adain", method_options=opts,
                            controls={"preserve_color": "luminance"})
    tiled = stylize_tensors(c, [s1], "adain", method_options=opts,
                            controls={"preserve_color": "luminance"}, tile=96)
    assert float((tiled - whole).abs().mean()) < 2e-3


def test_untiled_path_unchanged_and_tiles_deterministic():
    c, s = photo(64, 80), painting()
    a = stylize_tensors(c, [s], "adain", method_options={"encoder": "small"})
    b = stylize_tensors(c, [s], "adain", method_options={"encoder": "small"}, tile=None,
                        max_memory="64G")
    assert torch.equal(a, b)
    t1 = stylize_tensors(c, [s], "wct", method_options={"encoder": "small"}, tile=32, seed=3)
    t2 = stylize_tensors(c, [s], "wct", method_options={"encoder": "small"}, tile=32, seed=3)
    assert torch.equal(t1, t2)


def test_instance_norm_nets_record_and_freeze_their_statistics():
    from brushwork.methods.asma import frozen_asm_forward
    from brushwork.methods.johnson import run_net
    c = photo(64, 80)
    j = get_stylizer("johnson", "cpu")
    style = torch.ones(1, 1)
    plain = run_net(j.net, c, style, False)
    frozen = tiling.FrozenNorms(j.net)
    with frozen.recording():  # record mode is the network's own normalisation
        torch.testing.assert_close(run_net(j.net, c, style, False), plain, atol=1e-5, rtol=0)
    with frozen.applying():  # the same image with its own frozen statistics: the same result
        torch.testing.assert_close(run_net(j.net, c, style, False), plain, atol=1e-5, rtol=0)
        shifted = run_net(j.net, (c * 0.5).contiguous(), style, False)
    assert not torch.allclose(shifted, run_net(j.net, c * 0.5, style, False), atol=1e-3)
    assert "forward" not in vars(j.net.layers[0].norm)  # patched only inside the context
    a = get_stylizer("asma", "cpu")
    st = torch.zeros(1, len(a.artists))
    st[0, 1] = 1
    ref = a._run(c, st, None)
    fz = tiling.FrozenNorms(a.net, {a.net.asm: lambda f: frozen_asm_forward(a.net.asm, f)})
    with fz.recording():  # the frozen stroke module in record mode is the module itself
        torch.testing.assert_close(a._run(c, st, None), ref, atol=1e-5, rtol=0)
    assert "forward" not in vars(a.net.asm)


def test_frozen_norms_apply_in_their_own_thread_only():
    import threading
    from brushwork.methods.johnson import run_net
    j = get_stylizer("johnson", "cpu")
    c, style = photo(64, 80), torch.ones(1, 1)
    plain = run_net(j.net, c * 0.5, style, False)
    frozen = tiling.FrozenNorms(j.net)
    with frozen.recording():
        run_net(j.net, c, style, False)
    seen = {}
    with frozen.applying():
        mine = run_net(j.net, c * 0.5, style, False)
        t = threading.Thread(target=lambda: seen.update(
            other=run_net(j.net, c * 0.5, style, False)))
        t.start()
        t.join()
    assert not torch.allclose(mine, plain, atol=1e-3)  # this thread: the frozen statistics
    torch.testing.assert_close(seen["other"], plain)   # another thread: the net's own


def test_johnson_cin_asma_tiles_match_the_whole_image():
    c = photo(144, 176)
    for method, controls, tile, tol in (("johnson", {}, 96, 2e-3), ("cin", {"style_id": "2"}, 96, 2e-3),
                                        ("asma", {"artist": "1"}, 144, 0.03)):
        whole = stylize_tensors(c, [], method, controls=controls)
        tiled = stylize_tensors(c, [], method, controls=controls, tile=tile)
        assert tiled.shape == whole.shape
        assert float((tiled - whole).abs().mean()) < tol, method
    m = torch.zeros(1, 1, 144, 176)
    m[..., 60:] = 1
    ctl = {"style_id": "0,3", "masks": [m, 1 - m]}
    whole = stylize_tensors(c, [], "cin", controls=ctl)
    tiled = stylize_tensors(c, [], "cin", controls=ctl, tile=96)
    assert float((tiled - whole).abs().mean()) < 2e-3


# -------------------------------------------------------------------------- every method
WORKS = {"adain", "efdm", "wct", "linear", "sanet", "styleswap", "johnson", "cin", "asma",
         "gatys"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_tiles_or_refuses_cleanly(method):
    cls = METHODS[method]
    try:
        get_stylizer(method, "cpu")
    except BrushworkError as e:  # no shipped weights: nothing to tile
        pytest.skip(str(e))
    styles = [painting(48, 64)] if cls.capabilities.takes_style_images else []
    controls = {"steps": 2, "tile_steps": 1} if method == "gatys" else None
    if method == "analogy":
        controls = {"iterations": 1, "deconv_steps": 0}
    try:
        out = stylize_tensors(photo(64, 80), styles, method, controls=controls, tile=48)
    except BrushworkError as e:
        assert isinstance(e, (ControlError, ResourceError)) and "\n" not in str(e)
        assert method not in WORKS, f"{method} should tile: {e}"
        return
    assert method not in {"mst"}, "mst keeps a whole-map labelling and must refuse"
    assert out.shape == (1, 3, 64, 80) and bool(torch.isfinite(out).all())
    assert 0 <= float(out.min()) and float(out.max()) <= 1


def test_mst_and_non_tiling_methods_refuse():
    with pytest.raises(ControlError, match="cannot work tile by tile"):
        stylize_tensors(photo(64, 80), [painting()], "mst", tile=48)
    with pytest.raises(ControlError, match="cannot work tile by tile"):
        stylize_tensors(photo(64, 80), [painting()], "analogy", tile=48)


# ------------------------------------------------------------------------------- gatys
def test_gatys_coarse_to_fine_then_tiled_refinement():
    c, s = photo(64, 96), painting(48, 64)
    ev = []
    ctl = {"steps": 2, "tile_steps": 2}
    out = stylize_tensors(c, [s], "gatys", controls=ctl, tile=48, seed=1, callback=ev.append)
    assert out.shape == (1, 3, 64, 96) and bool(torch.isfinite(out).all())
    g = get_stylizer("gatys").tile_plan((64, 96), {"content_layers": ["relu4_2"],
                                                   "steps": 2, "tile_steps": 2,
                                                   "optimizer": "lbfgs"},
                                        "relu5_1", False, 48, None)
    assert g.fit_hw == (32, 48) and len(g.grid) == 6  # half size, then 2 x 3 windows
    scales = [e for e in ev if e.kind == "scale"]
    assert scales[-1].size == (64, 96) and scales[-1].message == "6 tiles of 48 px"
    steps = [e for e in ev if e.kind == "step"]
    assert steps[-1].total == 2 * (len(scales) - 1) + 2 * len(g.grid) == steps[-1].step
    again = stylize_tensors(c, [s], "gatys", controls=ctl, tile=48, seed=1)
    assert torch.equal(out, again)
    # the refinement changes the upsampled coarse result
    coarse = stylize_tensors(c, [s], "gatys", controls={"steps": 2, "tile_steps": 0}, tile=48,
                             seed=1)
    assert float((out - coarse).abs().mean()) > 1e-3


def test_gatys_tiles_with_masks_and_refuses_whole_image_terms():
    c, s = photo(64, 80), painting(48, 64)
    m = torch.zeros(1, 1, 64, 80)
    m[..., :40] = 1
    out = stylize_tensors(c, [s, s.flip(-1)], "gatys", tile=48, controls={
        "steps": 2, "tile_steps": 1, "masks": [m, 1 - m], "blend": "loss-mix"})
    assert out.shape == (1, 3, 64, 80)
    for bad in ({"mrf_weight": 1.0}, {"auto_regions": 2}):
        with pytest.raises(ControlError, match="tile by tile"):
            stylize_tensors(c, [s], "gatys", tile=48, controls={"steps": 1, **bad})


# ------------------------------------------------------------------------------ seams
def test_seam_ratio_sees_a_seam():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 120), torch.linspace(0, 1, 160), indexing="ij")
    g = torch.Generator().manual_seed(0)
    img = (0.5 * xx + 0.3 * yy + 0.05 * torch.rand(120, 160, generator=g)).expand(1, 3, -1, -1)
    assert abs(tiling.seam_ratio(img, [60.0], [80.0]) - 1.0) < 0.1
    cut = img.clone()
    cut[..., 80:] += 0.1  # a hard step at the x = 80 border
    assert tiling.seam_ratio(cut, [60.0], [80.0]) > 2
    u8 = (cut[0].permute(1, 2, 0) * 200).round().to(torch.uint8)  # (H, W, C) uint8 works too
    assert tiling.seam_ratio(u8, [60.0], [80.0]) > 2
    # strips give the same sums as one piece
    assert tiling.seam_ratio(cut, [60.0], [80.0], rows=7) == pytest.approx(
        tiling.seam_ratio(cut, [60.0], [80.0], rows=1000), rel=1e-9)


# -------------------------------------------------------------------------------- CLI
def test_cli_max_memory_too_small_is_one_line_and_writes_nothing(tmp_path):
    from conftest import save_png
    content, style = save_png(photo(), tmp_path / "c.png"), save_png(painting(), tmp_path / "s.png")
    out = tmp_path / "out.png"
    r = subprocess.run([sys.executable, "-m", "brushwork", "stylize", str(content), "-s",
                        str(style), "-m", "adain", "--encoder", "small", "--max-memory", "1M",
                        "-o", str(out), "-q"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("brushwork: error: ") and "memory" in lines[0]
    assert not out.exists() and not list(tmp_path.glob("out*"))


def test_which_transforms_freeze_the_thumbnail_statistics():
    """adain, wct and linear apply a per-position affine map (frozen from the thumbnail);
    efdm's rank matching, sanet's attention and styleswap's patches do not, and run per tile.
    (Images large enough for the fit's check: at least 4 (C + 1) feature positions.)"""
    from brushwork.core.protocol import begin
    from brushwork.core.vgg import LAYER_STRIDE
    from brushwork.methods import feedforward as ff
    s = painting(48, 64)
    for method, opts, size, frozen in (
            ("adain", {}, (160, 192), True), ("wct", {"encoder": "small"}, (160, 192), True),
            ("linear", {}, (160, 192), True), ("efdm", {}, (160, 192), False),
            ("styleswap", {}, (160, 192), False), ("sanet", {}, (384, 400), False)):
        st = get_stylizer(method, "cpu", **opts)
        ctl, _ = begin(st, [s], None, dict(st.control_defaults))
        passes = st.passes(ctl)
        mult = max(LAYER_STRIDE[layer] for p in passes for layer in p.layers)
        for p in passes:
            sfs = [ff.encode(st.encoder, s, list(p.layers), st.bf16)]
            maps = st._thumbnail_maps(photo(*size), sfs, None, ctl, p, mult)
            assert (maps[0] is not None) == frozen, (method, p.layers)


def test_budget_on_a_cuda_device_reads_the_devices_memory(monkeypatch):
    """On a CUDA device the budget is the allocator's reserve plus a share of the device's free
    memory, and what is held is the reserve (not the host's resident memory)."""
    from brushwork.core import tiling as T
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (10 * T.GiB, 80 * T.GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev: 2 * T.GiB)
    total, free = T.budget(None, "cuda:0")
    assert total == 2 * T.GiB + int(T.DEFAULT_SHARE * 10 * T.GiB)
    assert free == total - 2 * T.GiB
    assert T.budget(5 * T.GiB, torch.device("cuda"))[1] == 3 * T.GiB
    # the CPU budget is untouched by the CUDA figures
    assert abs(T.budget(5 * T.GiB, "cpu")[1] - (5 * T.GiB - T.process_rss())) < 64 * 2 ** 20
    assert T.accelerator_memory("cpu") is None
