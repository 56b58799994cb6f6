"""Video I/O, the stylisation pipeline and temporal consistency.

Clips are built here with PyAV: a textured square moving over a textured background, 64x48,
10 frames at 12 fps, with a 440 Hz tone. Methods are tiny deterministic Stylizers defined below,
plus one short gatys run through the real optimisation hooks.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from brushwork.errors import BrushworkError
from brushwork.video import io as video, temporal
from brushwork.video.temporal import TemporalStylizer, occlusion_mask, warp, warping_error
from brushwork.video.io import FrameSource, VideoError
from brushwork.video.pipeline import stylize_video
from brushwork.core.protocol import Capabilities

from video_clip import Flicker, clip_frames, make_clip, stream_facts, texture


class Recorder(Flicker):
    """Toy optimisation method: declares the init_image/temporal hooks and records them."""
    name = "recorder"
    controls = {"init_image": None, "temporal": None}
    capabilities = Capabilities(temporal_hooks=True)

    def __init__(self):
        super().__init__()
        self.seen = []

    def stylize(self, content, styles, *, controls=None, **kw):
        self.seen.append(dict(controls or {}))
        init = (controls or {}).get("init_image")
        return content.clone() if init is None else init.clone()


def _no_leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4")


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).float() / 255.0


# ------------------------------------------------------------------------ I/O and pipeline

@pytest.mark.parametrize("consistency", ["none", "flow"])
def test_end_to_end_keeps_frames_rate_and_audio(clip, tmp_path, consistency):
    out = tmp_path / "out.mp4"
    events = []
    stylize_video(clip, out, Flicker(), [torch.rand(1, 3, 16, 16)], consistency=consistency,
                  callback=events.append)
    src, dst = stream_facts(clip), stream_facts(out)
    assert dst["frames"] == src["frames"] == 10
    assert dst["fps"] == src["fps"] == Fraction(12)
    assert dst["size"] == (64, 48)
    assert dst["audio_codec"] == "aac" and dst["audio_rate"] == 16000
    assert abs(dst["audio_seconds"] - src["audio_seconds"]) < 0.01
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == list(range(1, 11)) and steps[-1].total == 10
    assert events[-1].kind == "done"
    assert _no_leftovers(tmp_path, {"out.mp4"}) == []


def test_flow_consistency_halves_warping_error(clip, tmp_path):
    errs = {}
    for mode in ("none", "flow"):
        out = tmp_path / f"{mode}.mp4"
        stylize_video(clip, out, Flicker(), [], consistency=mode)
        errs[mode] = warping_error(FrameSource(clip), FrameSource(out))["warping_error"]
    assert errs["flow"] < 0.5 * errs["none"]


def test_size_and_audio_transcode_to_webm(clip, tmp_path):
    out = tmp_path / "small.webm"
    stylize_video(clip, out, Flicker(), [], consistency="none", size=33)
    f = stream_facts(out)
    assert f["frames"] == 10 and f["size"] == (32, 24)  # even sizes for 4:2:0
    assert f["audio_codec"] == "opus"  # AAC cannot go into WebM: re-encoded


def test_frame_folders_in_and_out(clip, tmp_path):
    frames_dir = tmp_path / "frames"
    stylize_video(clip, frames_dir, Flicker(), [], consistency="flow")
    files = sorted(p.name for p in frames_dir.iterdir())
    assert files == [f"frame_{i:06d}.png" for i in range(1, 11)]
    out = tmp_path / "from_folder.mp4"
    stylize_video(frames_dir, out, Flicker(), [], consistency="none", fps=8)
    f = stream_facts(out)
    assert f["frames"] == 10 and f["fps"] == 8 and f["audio_codec"] is None
    # an existing non-empty folder is refused
    with pytest.raises(VideoError, match="not empty"):
        stylize_video(clip, frames_dir, Flicker(), [], consistency="none")


def test_decoded_frames_match_what_was_encoded(clip):
    frames = video.read_frames(clip)
    ref = clip_frames()
    assert len(frames) == 10 and frames[0].shape == (1, 3, 48, 64)
    err = np.abs(frames[3][0].permute(1, 2, 0).numpy() * 255 - ref[3]).mean()
    assert err < 8  # lossy h264 at crf 10, yuv420


# ------------------------------------------------------------------------ flow, warp, masks

def test_warp_known_translation():
    img = as_tensor(texture(48, 64, 5))
    flow = np.zeros((48, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3, -2   # out(x, y) = img(x + 3, y - 2)
    out = warp(img, flow)
    assert torch.allclose(out[..., 2:, :-3], img[..., :-2, 3:], atol=1e-5)


def test_flow_recovers_translation():
    big = as_tensor(texture(64, 80, 7))
    a, b = big[..., 8:56, 8:72], big[..., 6:54, 11:75]   # b's content = a shifted by (-3, +2)
    flow = temporal.optical_flow(a, b)
    inner = flow[12:-12, 12:-12]
    assert np.allclose(np.median(inner[..., 0]), -3, atol=0.3)
    assert np.allclose(np.median(inner[..., 1]), 2, atol=0.3)
    warped = warp(b, flow)
    assert (warped - a)[..., 12:-12, 12:-12].abs().mean() < 0.03


def test_occlusion_mask_known_case():
    h, w = 40, 60
    # previous frame: a 10x10 square at x=20..29 moving right by 5 px; static background.
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[15:25, 20:30, 0] = 5
    bwd = np.zeros((h, w, 2), np.float32)
    bwd[15:25, 25:35, 0] = -5
    m = occlusion_mask(fwd, bwd, motion_boundaries=False)[0, 0].numpy()
    # x=20..24 was covered by the square and is now background: disoccluded.
    assert (m[15:25, 20:25] == 0).all()
    assert (m[15:25, 26:34] == 1).all()          # the square itself is consistent
    assert m[:10].all() and m[30:].all()          # untouched background
    # a constant translation leaves the frame at one border only
    fwd2 = np.full((h, w, 2), (4, 0), np.float32)
    bwd2 = np.full((h, w, 2), (-4, 0), np.float32)
    m2 = occlusion_mask(fwd2, bwd2)[0, 0].numpy()
    assert (m2[:, :4] == 0).all() and (m2[:, 4:] == 1).all()


def test_photometric_mask_catches_a_wrong_flow():
    frames = [as_tensor(f) for f in clip_frames(2, step=6)]
    zero = np.zeros((48, 64, 2), np.float32)        # "no motion": wrong where the square moved
    m = temporal.photometric_mask(frames[0], frames[1], zero)[0, 0].numpy()
    assert (m[18:30, 5:9] == 0).all()               # uncovered background strip, square edge
    assert (m[:10] == 1).all() and (m[-10:] == 1).all()
    assert 0.7 < m.mean() < 0.95


def test_warping_error_of_identical_frames_is_zero(tmp_path):
    frames = [texture(48, 64, 3)] * 6
    path = make_clip(tmp_path / "still.mp4", frames=frames, audio=None)
    r = warping_error(FrameSource(path), FrameSource(path))
    assert r["pairs"] == 5 and r["warping_error"] < 1e-6 and r["input_warping_error"] < 1e-6


def test_warping_error_needs_matching_frame_counts(clip, tmp_path):
    short = make_clip(tmp_path / "short.mp4", n=6)
    with pytest.raises(BrushworkError, match="frame counts"):
        warping_error(FrameSource(clip), FrameSource(short))


def test_temporal_wrapper_uses_optimisation_hooks():
    frames = [as_tensor(f) for f in clip_frames(4)]
    rec = Recorder()
    ts = TemporalStylizer(rec, "flow", temporal_weight=7.0)
    outs = [ts.stylize(f, []) for f in frames]
    assert "init_image" not in rec.seen[0]
    for seen in rec.seen[1:]:
        target, mask, weight = seen["temporal"]
        assert seen["init_image"].shape == target.shape == (1, 3, 48, 64)
        assert mask.shape == (1, 1, 48, 64) and weight == 7.0
        assert 0.5 < float(mask.mean()) < 1.0   # most pixels trusted, the moving edges not
    assert outs[-1].shape == frames[-1].shape
    # plain methods get no hooks, and "none" mode passes frames straight through
    rec2 = Recorder()
    ts2 = TemporalStylizer(rec2, "none")
    [ts2.stylize(f, []) for f in frames]
    assert all("init_image" not in s for s in rec2.seen)


def test_gatys_through_temporal_hooks(clip, tmp_path):
    from brushwork.methods import METHODS

    gatys = METHODS["gatys"]()
    out = tmp_path / "g.mp4"
    src = make_clip(tmp_path / "g_in.mp4", n=3, w=48, h=32, audio="aac")
    stylize_video(src, out, gatys, [as_tensor(texture(32, 32, 9))], consistency="flow",
                  controls={"steps": 2, "scales": 1, "content_layers": ["relu2_1"],
                            "style_layers": ["relu1_1", "relu2_1"]})
    f = stream_facts(out)
    assert f["frames"] == 3 and f["audio_codec"] == "aac"



@pytest.mark.parametrize("name, options", [("adain", {}), ("wct", {"encoder": "small"})])
def test_shipped_networks_through_video_end_to_end(clip, tmp_path, name, options):
    """Shipped adain and wct (small encoder, with its own flow defaults) on a real clip:
    frame count, rate and audio kept; flow mode flickers far less than frame by frame."""
    from brushwork.methods import METHODS

    method = METHODS[name](**options)
    style = [as_tensor(texture(64, 64, 5))]
    errs = {}
    for mode in ("none", "flow"):
        out = tmp_path / f"{name}_{mode}.mp4"
        stylize_video(clip, out, method, style, consistency=mode, size=0)
        f = stream_facts(out)
        assert f["frames"] == 10 and f["fps"] == Fraction(12) and f["audio_codec"] == "aac"
        with FrameSource(clip) as a, FrameSource(out) as b:
            errs[mode] = warping_error(list(a), list(b))["warping_error"]
    assert errs["flow"] < 0.5 * errs["none"]


# ------------------------------------------------------------------------ bad input

def test_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is a text file, not a video\n" * 20)
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoError) as e:
        stylize_video(bad, out, Flicker(), [])
    assert "\n" not in str(e.value) and "not a video" in str(e.value)
    assert not out.exists() and _no_leftovers(tmp_path, {"notes.mp4"}) == []


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_zero_frame_video(tmp_path, ext):
    empty = make_clip(tmp_path / f"empty{ext}", frames=[], audio="aac")
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoError) as e:
        stylize_video(empty, out, Flicker(), [])
    assert "\n" not in str(e.value)
    assert "no frames" in str(e.value) or "no video stream" in str(e.value)
    assert _no_leftovers(tmp_path, {f"empty{ext}"}) == []


def test_unsupported_codec_and_formats(clip, tmp_path):
    for kw, out, pattern in [({"codec": "theora"}, "o.mp4", "unsupported video codec"),
                             ({"codec": "h264"}, "o.webm", "cannot be stored"),
                             ({}, "o.png", "not an image file"),
                             ({}, "o.flv", "unknown video format")]:
        with pytest.raises(VideoError, match=pattern) as e:
            stylize_video(clip, tmp_path / out, Flicker(), [], **kw)
        assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_input_and_empty_folder(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        FrameSource(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no image frames"):
        FrameSource(tmp_path / "empty")


def test_failure_mid_video_leaves_nothing(clip, tmp_path):
    class Broken(Flicker):
        def stylize(self, content, styles, **kw):
            if self.calls == 4:
                raise RuntimeError("boom")
            return super().stylize(content, styles, **kw)

    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        stylize_video(clip, out, Broken(), [])
    assert list(tmp_path.iterdir()) == []


def test_restore_detail_matches_reference_detail_energy():
    import cv2
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 40, 56, generator=g)
    smooth = torch.nn.functional.avg_pool2d(ref, 5, 1, 2, count_include_pad=False)
    out = temporal._restore_detail(smooth, ref, 1.5)

    def low(t):
        return torch.from_numpy(cv2.GaussianBlur(temporal._hwc(t), (11, 11), 1.5,
                                                 borderType=cv2.BORDER_REFLECT)).permute(2, 0, 1)[None]

    want = (ref - low(ref)).std((2, 3))
    before = (smooth - low(smooth)).std((2, 3))
    got = (out - low(smooth)).std((2, 3))          # the low band is kept, the detail rescaled
    assert torch.allclose(got, want, rtol=1e-3)
    assert (before < 0.7 * want).all()             # the blur had removed detail


def test_flow_blend_keeps_detail_energy_and_still_cuts_flicker():
    frames = [as_tensor(f) for f in clip_frames(6)]
    outs = {}
    for sigma in (None, 1.5):
        ts = TemporalStylizer(Flicker(), "flow", detail_sigma=sigma)
        outs[sigma] = [ts.stylize(f, [], seed=0) for f in frames]
    plain = Flicker()
    none = [plain.stylize(f, [], seed=0) for f in frames]

    def detail(t):
        return (t[..., 1:, :] - t[..., :-1, :]).abs().mean()

    def err(o):
        return warping_error(frames, o)["warping_error"]

    assert detail(outs[1.5][-1]) > detail(outs[None][-1])
    assert err(outs[1.5]) < 0.8 * err(none)
    with pytest.raises(BrushworkError, match="detail_sigma"):
        TemporalStylizer(Flicker(), "flow", detail_sigma=-1)


class Sticky(Flicker):
    """Flicker that asks the flow wrapper to carry its result forward (as wct does)."""
    name = "sticky"
    capabilities = Capabilities(video_defaults={"blend": 0.95, "resample": "lanczos"})


def _fine_energy(t):
    return float((t[..., 1:, :] - t[..., :-1, :]).abs().mean()
                 + (t[..., :, 1:] - t[..., :, :-1]).abs().mean())


def test_lanczos_warp_keeps_detail_that_repeated_bilinear_warps_blur_away():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 32, 40, generator=g)
    shift = np.zeros((32, 40, 2), np.float32)
    shift[..., 0] = 2.0                                   # whole pixels: both are exact shifts
    for r in temporal.RESAMPLING:
        assert torch.allclose(warp(img, shift, r)[..., :, :-2], img[..., :, 2:], atol=1e-5)
    half = np.zeros((32, 40, 2), np.float32)
    half[..., 0] = 0.5
    out = {}
    for r in temporal.RESAMPLING:
        x = img
        for k in range(10):                               # half a pixel right, then back
            x = warp(x, half if k % 2 == 0 else -half, r)
        out[r] = x[..., 4:-4, 4:-4]
    assert _fine_energy(out["lanczos"]) > 1.5 * _fine_energy(out["linear"])
    assert (out["lanczos"] - img[..., 4:-4, 4:-4]).abs().mean() < \
        (out["linear"] - img[..., 4:-4, 4:-4]).abs().mean()
    with pytest.raises(BrushworkError, match="resampling"):
        warp(img, half, "cubic")


def test_methods_bring_their_own_video_defaults():
    ts = TemporalStylizer(Sticky(), "flow")
    assert (ts.blend, ts.resample) == (0.95, "lanczos")
    plain = TemporalStylizer(Flicker(), "flow")
    assert (plain.blend, plain.resample) == (0.4, "linear")
    given = TemporalStylizer(Sticky(), "flow", blend=0.3, resample="linear")
    assert (given.blend, given.resample) == (0.3, "linear")
    with pytest.raises(BrushworkError, match="resampling"):
        TemporalStylizer(Sticky(), "flow", resample="nearest")


def test_carrying_the_result_forward_cuts_flicker_and_keeps_its_detail():
    frames = [as_tensor(f) for f in clip_frames(12)]
    none = [Sticky().stylize(f, [], seed=0) for f in frames]
    outs = {}
    for r in temporal.RESAMPLING:
        ts = TemporalStylizer(Sticky(), "flow", resample=r)
        outs[r] = [ts.stylize(f, [], seed=0) for f in frames]
    err = {k: warping_error(frames, o)["warping_error"] for k, o in outs.items()}
    assert err["lanczos"] < 0.2 * warping_error(frames, none)["warping_error"]
    # the detail restore and the sharp warp keep the texture's energy near a fresh frame's
    assert _fine_energy(outs["lanczos"][-1]) > 0.8 * _fine_energy(none[-1])


def test_a_scene_cut_takes_the_fresh_frame_even_when_carrying():
    frames = [as_tensor(f) for f in clip_frames(4)]
    cut = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))  # a new shot
    ts, ref = TemporalStylizer(Sticky(), "flow"), Sticky()
    for f in frames:
        ts.stylize(f, [], seed=0)
        ref.stylize(f, [], seed=0)
    out, fresh = ts.stylize(cut, [], seed=0), ref.stylize(cut, [], seed=0)
    assert float(ts.last_mask.mean()) < 0.05          # nothing of the old shot is trusted
    assert (out - fresh).abs().mean() < 0.02
