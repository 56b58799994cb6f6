"""The fast video path: flow on reduced frames, masks at the working scale, the one-pass blend,
style features kept over a clip, per-stage times, the encoder's conversion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brushwork import cli
from brushwork.core.image import save_image
from brushwork.core.stats import mean_std
from brushwork.methods import METHODS
from brushwork.video import temporal
from brushwork.video.io import FrameSource, VideoError, VideoWriter, read_frames
from brushwork.video.pipeline import reuse_style_features, stylize_video
from brushwork.video.temporal import StageTimes, TemporalStylizer, warp

from video_clip import Flicker, clip_frames, make_clip, texture


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).float() / 255.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", audio=None)


# ------------------------------------------------------------------------------ fast flow

def test_fast_flow_scale():
    assert temporal.fast_flow_scale((48, 64)) == 1
    assert temporal.fast_flow_scale((192, 256)) == 1
    assert temporal.fast_flow_scale((384, 512)) == 2
    assert temporal.fast_flow_scale((1080, 1920)) == 4


def test_reduced_resolution_flow_recovers_a_known_translation():
    """At 320x240 the fast flow works on 160x120 frames; brought back up it must give the
    full-resolution shift, and agree with the reference flow."""
    big = as_tensor(np.kron(texture(70, 90, 11), np.ones((4, 4, 1), np.uint8)))  # 280x360
    a, b = big[..., 20:260, 20:340], big[..., 16:256, 26:346]   # b = a shifted by (-6, +4)
    fast = temporal.FlowEstimator("dis", fast=True)
    assert fast.scale((240, 320)) == 2
    flow = fast(a, b)
    assert flow.shape == (240, 320, 2) and flow.dtype == np.float32
    inner = flow[30:-30, 30:-30]
    assert abs(np.median(inner[..., 0]) + 6) < 0.3
    assert abs(np.median(inner[..., 1]) - 4) < 0.3
    ref = temporal.optical_flow(a, b)
    epe = np.sqrt(((flow - ref) ** 2).sum(-1))[30:-30, 30:-30]
    assert np.median(epe) < 0.3
    assert (warp(b, flow) - a)[..., 30:-30, 30:-30].abs().mean() < 0.03


def test_upsample_flow_scales_the_vectors():
    small = np.zeros((10, 20, 2), np.float32)
    small[..., 0], small[..., 1] = 1.5, -0.5
    up = temporal.upsample_flow(small, (20, 40))
    assert up.shape == (20, 40, 2)
    assert np.allclose(up[..., 0], 3.0) and np.allclose(up[..., 1], -1.0)
    assert temporal.upsample_flow(small, (10, 20)) is small


def test_consistency_test_means_the_same_at_a_reduced_scale():
    """The mask from flows at half resolution (values in half-res pixels, ``scale=2``) equals
    the full-resolution mask sampled at the same points."""
    h, w = 80, 120
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[30:50, 40:60, 0] = 10                      # a square moving right by 10 px
    bwd = np.zeros((h, w, 2), np.float32)
    bwd[30:50, 50:70, 0] = -10
    full = temporal._consistent(fwd, bwd, motion_boundaries=False)
    half = temporal._consistent(fwd[::2, ::2] / 2, bwd[::2, ::2] / 2, motion_boundaries=False,
                                scale=2)
    assert (half == full[::2, ::2]).mean() > 0.98
    assert not half[15:25, 20:25].any()           # the uncovered strip
    assert half[15:25, 26:34].all()               # the square itself
    # a small mismatch: 0.8 px in full-resolution pixels is over the 0.5 px^2 allowance,
    # 0.4 px is not, whether it is seen at full or at half resolution
    f2 = np.full((h, w, 2), (0.8, 0.0), np.float32)
    b2 = np.zeros((h, w, 2), np.float32)
    assert not temporal._consistent(f2, b2, False)[10:-10, 10:-10].any()
    assert not temporal._consistent(f2[::2, ::2] / 2, b2[::2, ::2], False,
                                    scale=2)[5:-5, 5:-5].any()
    assert temporal._consistent(f2[::2, ::2] / 4, b2[::2, ::2], False, scale=2)[5:-5, 5:-5].all()


def test_fast_flow_keeps_the_flicker_cut_on_a_clip(clip):
    frames = read_frames(clip)
    fresh = Flicker()
    none = [fresh.stylize(f, []) for f in frames]
    errs = {}
    for fast in (False, True):
        ts = TemporalStylizer(Flicker(), "flow", fast_flow=fast)
        errs[fast] = temporal.warping_error(frames, [ts.stylize(f, []) for f in frames])
        ts.close()
    base = temporal.warping_error(frames, none)["warping_error"]
    assert errs[True]["warping_error"] < 0.5 * base
    assert errs[True]["warping_error"] < 1.2 * errs[False]["warping_error"]


# ------------------------------------------------------------------------------ the blend

def _sequential_blend(fresh, warped, mask, a, sigma):
    """The blend as three separate steps: mix, contrast restore, detail restore."""
    out = a * mask * warped + (1 - a * mask) * fresh
    out = temporal._match_channel_stats(out, fresh)
    return temporal._restore_detail(out, fresh, sigma).clamp(0, 1)


@pytest.mark.parametrize("hw", [(48, 64), (320, 400)])
def test_one_pass_blend_equals_the_three_steps(hw):
    g = torch.Generator().manual_seed(0)
    fresh = torch.rand(1, 3, *hw, generator=g)
    warped = torch.nn.functional.avg_pool2d(torch.rand(1, 3, *hw, generator=g), 3, 1, 1)
    mask = (torch.rand(1, 1, *hw, generator=g) > 0.2).float()
    ts = TemporalStylizer(Flicker(), "flow")
    got = ts._blend(fresh, warped, mask, 0.4)
    want = _sequential_blend(fresh, warped, mask, 0.4, 1.5)
    # small frames: statistics from every pixel; larger ones from a regular subsample
    tol = 1e-5 if hw == (48, 64) else 5e-3
    assert (got - want).abs().max() < tol
    ts.restore_contrast = False
    plain = ts._blend(fresh, warped, mask, 0.4)
    mixed = 0.4 * mask * warped + (1 - 0.4 * mask) * fresh
    assert (plain - temporal._restore_detail(mixed, fresh, 1.5).clamp(0, 1)).abs().max() < tol
    ts.detail_sigma = None
    assert torch.allclose(ts._blend(fresh, warped, mask, 0.4), mixed.clamp(0, 1), atol=1e-6)


def test_stats_view_keeps_about_49k_pixels():
    x = torch.zeros(1, 3, 384, 512)
    assert temporal._stats_view(x).shape == (1, 3, 192, 256)
    small = torch.zeros(1, 3, 100, 100)
    assert temporal._stats_view(small) is small
    y = torch.rand(1, 3, 384, 512, generator=torch.Generator().manual_seed(1))
    m_all, s_all = mean_std(y, eps=0)
    m_sub, s_sub = mean_std(temporal._stats_view(y), eps=0)
    assert torch.allclose(m_all, m_sub, atol=3e-3) and torch.allclose(s_all, s_sub, atol=3e-3)


# ------------------------------------------------------------------------ pipeline pieces

def test_stage_times_cover_every_stage_and_the_frames(clip, tmp_path):
    times = StageTimes()
    stylize_video(clip, tmp_path / "f.mp4", Flicker(), [], consistency="flow", times=times)
    per = times.per_frame()
    assert times.frames == 10
    assert set(per) == {"decode", "model", "flow", "masks", "warp_blend", "encode"}
    assert all(v["wall_ms"] >= 0 and v["cpu_ms"] >= 0 for v in per.values())
    assert per["model"]["wall_ms"] > 0 and per["encode"]["wall_ms"] > 0
    none = StageTimes()
    stylize_video(clip, tmp_path / "n.mp4", Flicker(), [], consistency="none", times=none)
    assert set(none.per_frame()) == {"decode", "model", "encode"}


def test_stage_times_add_up_and_are_thread_safe():
    import threading

    t = StageTimes()

    def work():
        for _ in range(200):
            t.add("x", 0.001, 0.0005)
            with t("y"):
                pass
    threads = [threading.Thread(target=work) for _ in range(4)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    t.frames = 8
    per = t.per_frame()
    assert math.isclose(per["x"]["wall_ms"], 800 * 1.0 / 8) and \
        math.isclose(per["x"]["cpu_ms"], 800 * 0.5 / 8)
    assert "y" in per


def test_flow_video_is_deterministic(clip, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"d{k}"
        stylize_video(clip, out, Flicker(), [], consistency="flow")
        outs.append(read_frames(out))
    assert len(outs[0]) == 10
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_opencv_threads_are_restored(clip, tmp_path):
    import cv2

    n = cv2.getNumThreads()
    stylize_video(clip, tmp_path / "o.mp4", Flicker(), [], consistency="flow")
    assert cv2.getNumThreads() == n


def _count_style_encodes(monkeypatch):
    from brushwork.methods import feedforward as ff

    calls = []
    base = ff.FeedForward.style_features

    def counting(self, style, p, c):
        calls.append(tuple(style.shape))
        return base(self, style, p, c)
    monkeypatch.setattr(ff.FeedForward, "style_features", counting)
    return calls


def test_style_features_are_encoded_once_per_clip_with_the_same_results(monkeypatch):
    adain = METHODS["adain"](encoder="small")
    frames = [as_tensor(f) for f in clip_frames(4)]
    g = torch.Generator().manual_seed(2)
    style, other = torch.rand(1, 3, 40, 40, generator=g), torch.rand(1, 3, 40, 40, generator=g)
    plain = [adain.stylize(f, [style], seed=0) for f in frames]
    calls = _count_style_encodes(monkeypatch)
    with reuse_style_features(adain):
        kept = [adain.stylize(f, [style], seed=0) for f in frames]
        assert len(calls) == 1
        adain.stylize(frames[0], [other], seed=0)        # another style: encoded afresh
        assert len(calls) == 2
        adain.stylize(frames[1], [style], seed=0)        # the first one is still kept
        assert len(calls) == 2
    assert "style_features" not in vars(adain)           # the method is left as it was
    assert all(torch.equal(a, b) for a, b in zip(plain, kept))
    adain.stylize(frames[0], [style], seed=0)
    assert len(calls) == 3


def test_style_features_are_left_alone_for_other_stylizers():
    toy = Flicker()
    with reuse_style_features(toy):
        assert "style_features" not in vars(toy)


def test_writer_refuses_non_finite_frames_and_rounds_like_before(tmp_path):
    frame = as_tensor(texture(48, 64, 4))
    bad = frame.clone()
    bad[0, 1, 3, 3] = float("nan")
    with VideoWriter(tmp_path / "ok.mp4", 12, (48, 64), crf=0) as w:
        w.write(frame)
    with pytest.raises(VideoError, match="NaN"):
        with VideoWriter(tmp_path / "bad.mp4", 12, (48, 64)) as w:
            w.write(bad)
    assert not (tmp_path / "bad.mp4").exists()
    with FrameSource(tmp_path / "ok.mp4") as src:
        back = next(iter(src))
    assert (back - frame).abs().mean() < 0.04           # 4:2:0 chroma is the main loss


def test_cli_timings_prints_the_stage_table(tmp_path, capsys, monkeypatch):
    class Toy(Flicker):
        summary = "test method"

        def __init__(self, device="cpu"):
            super().__init__()
    monkeypatch.setitem(METHODS, "toy", Toy)
    clip = make_clip(tmp_path / "in.mp4", audio=None)
    style = save_image(torch.rand(1, 3, 16, 16), tmp_path / "style.png")
    out = tmp_path / "out.mp4"
    assert cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(out),
                     "--timings", "-q"]) == 0
    text = capsys.readouterr().out
    lines = {ln.split()[0] for ln in text.splitlines() if ln.strip()}
    assert {"stage", "decode", "model", "flow", "masks", "warp_blend", "encode"} <= lines
    assert out.exists()
