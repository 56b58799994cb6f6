"""The method protocol, the layout's import rule, and every method against every CLI flag.

Each method declares its controls and capabilities; the CLI builds one flag per control of any
method. So every method must run with each flag it declares and refuse, with one line and exit
code 2, each flag it does not.
"""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork.cli import main
from brushwork.cli.common import all_controls, control_flag, visible_controls
from brushwork.core.protocol import Capabilities, Control
from brushwork.methods import METHODS

from _arbitrary_util import save_metastyle_file

SRC = Path(__file__).resolve().parents[1] / "src" / "brushwork"


# ----------------------------------------------------------------------------- import rule
def _imports(path: Path) -> list[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


@pytest.mark.parametrize("package", ["core", "methods"])
def test_core_and_methods_never_import_train_or_cli(package):
    bad = [(str(f.relative_to(SRC)), m) for f in sorted((SRC / package).rglob("*.py"))
           for m in _imports(f) if m.startswith(("brushwork.train", "brushwork.cli"))]
    assert bad == []


def test_core_imports_nothing_above_it():
    allowed = ("brushwork.core", "brushwork.errors")
    bad = [(str(f.relative_to(SRC)), m) for f in sorted((SRC / "core").rglob("*.py"))
           for m in _imports(f) if m.startswith("brushwork") and not m.startswith(allowed)]
    assert bad == []


def test_inference_loads_no_training_module():
    code = ("import sys, brushwork, brushwork.methods, brushwork.api; "
            "print([m for m in sys.modules if m.startswith(('brushwork.train', 'brushwork.cli'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- the protocol
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_the_protocol(name):
    cls = METHODS[name]
    assert cls.name == name and isinstance(cls.summary, str) and cls.summary
    assert isinstance(cls.capabilities, Capabilities)
    assert all(isinstance(c, Control) and c.name == k for k, c in cls.controls.items())
    caps = cls.capabilities
    if caps.styles == "labels":
        assert callable(getattr(cls, "labels")) and callable(getattr(cls, "render_all"))
    if caps.temporal_hooks:
        assert {"init_image", "temporal"} <= set(cls.controls)
    assert set(caps.video_defaults) <= {"blend", "resample"}


def test_a_control_name_means_one_thing_everywhere():
    seen = {}
    for cls in METHODS.values():
        for name, c in cls.controls.items():
            if name in seen:
                assert (c.kind, c.default, c.choices, c.low, c.high) == seen[name], name
            seen[name] = (c.kind, c.default, c.choices, c.low, c.high)


# ----------------------------------------------------------------------------- every flag
def _png(path, size=(20, 16), seed=0, gray=None):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if gray is not None:
        a = np.full((size[1], size[0]), gray, np.uint8)
    Image.fromarray(a).save(path)
    return str(path)


# a valid value for each control, for a run at 16-20 px (controls without one use the default)
VALUES = {
    "content_layer_weights": "1", "tile_steps": "1", "style_layer_weights": "1,1,1,1,1", "style_depth": "2",
    "lr": "0.5", "scales": "1", "time_budget": "30", "steps": "1", "levels": "2,1",
    "style_id": "1", "artist": "1", "stroke": "1.5", "init": "noise", "optimizer": "adam",
    "strength": "0.5", "style_scale": "1.5", "preserve_color": "luminance",
    "content_layers": "relu3_1", "style_layers": "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
    "hist_layers": "relu1_1", "mrf_layers": "relu3_1", "patch_size": "1",
    "clusters": "2", "smoothness": "0.5",
    "laplacian_weight": "10", "laplacian_pool": "4,16",
    "alpha": "0.5", "iterations": "2", "deconv_steps": "2",
    "auto_regions": "2", "map_weight": "5", "fine_steps": "1",
}


# controls that only work as a pair (given together when the method accepts them)
PARTNERS = {"content_map": "style_map", "style_map": "content_map"}


def _flag_value(name, c, tmp_path):
    if name == "style_map":  # the style image's size (24x20)
        return _png(tmp_path / f"{name}.png", (24, 20), gray=255)
    if name in ("masks", "stroke_mask", "content_map"):  # the content's size (20x16)
        return _png(tmp_path / f"{name}.png", gray=255)
    if name in VALUES:
        return VALUES[name]
    return str(c.default[0] if isinstance(c.default, list) else c.default)


def _cases():
    shared = all_controls()
    for name, cls in sorted(METHODS.items()):
        own = visible_controls(cls)
        for ctl in sorted(shared):
            yield pytest.param(name, ctl, ctl in own, id=f"{name}-{ctl}")


NEEDS_WEIGHTS = {"metastyle": lambda d: save_metastyle_file(d / "adapted.safetensors")}
"""Methods without a default weight file -> a tiny file for them."""


def _run(capsys, tmp_path, method, extra):
    content = _png(tmp_path / "c.png", (20, 16), 1)
    style = _png(tmp_path / "s.png", (24, 20), 2)
    styles = ["-s", style] if METHODS[method].capabilities.takes_style_images else []
    out = tmp_path / "out.png"
    args = ["stylize", content, *styles, "-m", method, "-o", str(out), "--size", "0", "-q"]
    if method in NEEDS_WEIGHTS and "--weights" not in extra:
        args += ["--weights", NEEDS_WEIGHTS[method](tmp_path)]
    if method == "gatys":
        args += ["--steps", "1"] if "--steps" not in extra else []
    code = main(args + extra)
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("method,control,accepted", list(_cases()))
def test_every_method_with_every_control_flag(method, control, accepted, tmp_path, capsys):
    cls = METHODS[method]
    c = all_controls()[control]
    flags = [control_flag(control), _flag_value(control, c, tmp_path)]
    if accepted and control in PARTNERS:
        partner = PARTNERS[control]
        flags += [control_flag(partner), _flag_value(partner, all_controls()[partner], tmp_path)]
    code, err, out = _run(capsys, tmp_path, method, flags)
    if accepted:
        assert code == 0, err
        assert Image.open(out).size == (20, 16)
    else:
        assert code == 2 and not out.exists()
        lines = [l for l in err.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("brushwork: error:"), err
        assert cls.name in lines[0] and "support" in lines[0]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("option,value", [("--encoder", "small"), ("--weights", "x.safetensors")])
def test_constructor_options_are_declared(method, option, value, tmp_path, capsys):
    code, err, out = _run(capsys, tmp_path, method, [option, value])
    declared = option[2:] in METHODS[method].capabilities.options
    if declared and option == "--encoder" :
        assert code == 0, err
    else:  # undeclared: refused by name; declared --weights: the file does not exist
        assert code == 2 and not out.exists()
        assert err.startswith("brushwork: error:") and len(err.strip().splitlines()) == 1
        assert (option in err) if not declared else ("not found" in err)
