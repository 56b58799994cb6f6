"""Many inputs in one process: planning, shards, the manifest, --resume after SIGKILL, bad files
skipped, recipes reproduced, and the refusals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork.batch import manifest, plan
from brushwork.cli import main
from brushwork.core.recipe import check_recipe, make_recipe, read_recipe, weights_sha256
from brushwork.errors import BrushworkError, ControlError
from conftest import make_photo, photo_folder

ADAIN = ["-m", "adain", "--encoder", "small", "--size", "32", "-q"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "photos"
    (d / "trip").mkdir(parents=True)
    make_photo(d / "a.png", 1)
    make_photo(d / "b.jpg", 2)
    make_photo(d / "trip" / "c.png", 3)
    style = make_photo(tmp_path / "style.png", 9, (48, 48))
    return d, style


def test_plan_expands_folders_globs_and_files_with_names(folder, tmp_path):
    d, _ = folder
    items = plan.plan([str(d)], tmp_path / "out")
    assert [i.name for i in items] == ["a.png", "b.jpg", "trip/c.png"]
    assert items[2].output == tmp_path / "out" / "trip" / "c.png"
    globbed = plan.plan([str(d / "*.png"), str(d / "b.jpg")], tmp_path / "out", fmt="jpg")
    assert [i.name for i in globbed] == ["a.png", "b.jpg"]
    assert globbed[0].output.suffix == ".jpg"
    # the same file named twice is stylised once
    assert len(plan.plan([str(d / "a.png"), str(d / "a.png")], tmp_path / "o")) == 1


def test_shards_partition_the_inputs_deterministically(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(12):
        (d / f"p{i:02d}.png").write_bytes(b"")  # planning does not read the files
    everything = {i.name for i in plan.plan([str(d)], tmp_path / "o")}
    shards = [{i.name for i in plan.plan([str(d)], tmp_path / "o", shard=(k, 3))}
              for k in (1, 2, 3)]
    assert set().union(*shards) == everything
    assert sum(len(s) for s in shards) == len(everything)
    assert shards == [{i.name for i in plan.plan([str(d)], tmp_path / "o", shard=(k, 3))}
                      for k in (1, 2, 3)]
    for bad in ("3/2", "0/2", "1/0", "x", "1/2/3"):
        with pytest.raises(ControlError):
            plan.parse_shard(bad)


def test_two_inputs_writing_one_output_are_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    make_photo(tmp_path / "x" / "p.png", 1)
    make_photo(tmp_path / "y" / "p.png", 2)
    with pytest.raises(ControlError, match="both be written"):
        plan.plan([str(tmp_path / "x" / "p.png"), str(tmp_path / "y" / "p.png")], tmp_path / "o")


def test_manifest_skips_a_torn_last_line_and_keeps_appending(tmp_path):
    m = tmp_path / manifest.FILE
    manifest.append(m, {"name": "a", "status": "done"})
    with open(m, "a") as f:
        f.write('{"name": "b", "sta')  # a writer killed mid-line
    manifest.append(m, {"name": "c", "status": "failed"})
    assert sorted(manifest.read(m)) == ["a", "c"]


def test_batch_writes_outputs_and_manifest_and_skips_a_bad_file(folder, tmp_path, capsys):
    d, style = folder
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    rc = main(["stylize", str(d), "-s", str(style), "-o", str(out)] + ADAIN)
    err = capsys.readouterr().err
    assert rc == 2  # one file failed
    assert err.count("brushwork: error:") == 1 and "broken.png" in err
    recs = manifest.read(out / manifest.FILE)
    assert sorted(recs) == ["a.png", "b.jpg", "broken.png", "trip/c.png"]
    assert recs["broken.png"]["status"] == "failed" and "broken.png" in recs["broken.png"]["error"]
    for name in ("a.png", "b.jpg", "trip/c.png"):
        r = recs[name]
        assert r["status"] == "done"
        o = out / r["output"]
        assert Image.open(o).size[0] == 32
        check_recipe(r["recipe"])
        assert r["recipe"]["method"] == "adain" and r["recipe"]["options"] == {"encoder": "small"}
        assert "adain_small.safetensors" in r["recipe"]["weights"]
    assert not (out / "broken.png").exists()


def test_batch_output_equals_one_file_at_a_time(folder, tmp_path):
    d, style = folder
    assert main(["stylize", str(d), "-s", str(style), "-o", str(tmp_path / "out")] + ADAIN) == 0
    assert main(["stylize", str(d / "b.jpg"), "-s", str(style), "-o", str(tmp_path / "one.png")]
                + ADAIN) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "b.png")),
                          np.asarray(Image.open(tmp_path / "one.png")))


def test_resume_skips_finished_files_and_redoes_changed_ones(folder, tmp_path):
    d, style = folder
    out = tmp_path / "out"
    assert main(["stylize", str(d), "-s", str(style), "-o", str(out)] + ADAIN) == 0
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(["stylize", str(d), "-s", str(style), "-o", str(out), "--resume"] + ADAIN) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamp
    lines = (out / manifest.FILE).read_text().splitlines()
    assert len(lines) == 3  # nothing done twice
    # a changed input, a deleted output and a changed recipe are redone
    make_photo(d / "a.png", 5)
    (out / "b.png").unlink()
    assert main(["stylize", str(d), "-s", str(style), "-o", str(out), "--resume"] + ADAIN) == 0
    assert len((out / manifest.FILE).read_text().splitlines()) == 5
    assert main(["stylize", str(d), "-s", str(style), "-o", str(out), "--resume",
                 "--strength", "0.5"] + ADAIN) == 0
    assert len((out / manifest.FILE).read_text().splitlines()) == 8


def test_sigkill_mid_batch_then_resume_finishes_with_nothing_done_twice(tmp_path):
    d, style = photo_folder(tmp_path, 6)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "brushwork", "stylize", str(d), "-s", str(style), "-o", str(out),
           "--steps", "40", "--size", "48", "--precision", "fp32", "-q"]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(manifest.read(out / manifest.FILE)) < 2:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = manifest.read(out / manifest.FILE)
    assert 2 <= len(before) < 6, "the batch was not killed mid-way"
    # only complete outputs: every image there is recorded with its sha256
    for png in out.glob("*.png"):
        Image.open(png).load()
    r = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (out / manifest.FILE).read_text().splitlines() if x.strip()
             and x.startswith("{") and x.endswith("}")]
    names = [x["name"] for x in lines if x["status"] == "done"]
    assert sorted(names) == [f"p{i}.png" for i in range(6)]  # each done exactly once
    assert not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}.png" for i in range(6)]


def test_recipe_from_the_manifest_reproduces_the_output(folder, tmp_path):
    d, style = folder
    out = tmp_path / "out"
    assert main(["stylize", str(d), "-s", str(style), "-o", str(out), "--strength", "0.6"]
                + ADAIN) == 0
    recipe = manifest.read(out / manifest.FILE)["a.png"]["recipe"]
    rf = tmp_path / "recipe.json"
    rf.write_text(json.dumps(recipe))
    assert main(["stylize", str(d / "a.png"), "-s", str(style), "--recipe", str(rf), "-o",
                 str(tmp_path / "again.png"), "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                          np.asarray(Image.open(out / "a.png")))
    # flags on the command line override the recipe
    assert main(["stylize", str(d / "a.png"), "-s", str(style), "--recipe", str(rf),
                 "--strength", "1", "-o", str(tmp_path / "full.png"), "-q"]) == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "full.png")),
                              np.asarray(Image.open(out / "a.png")))


def test_recipe_functions(tmp_path):
    from brushwork.api import get_stylizer
    st = get_stylizer("adain", encoder="small")
    sha = weights_sha256(st)
    assert list(sha) == ["adain_small.safetensors"] and len(sha["adain_small.safetensors"]) == 64
    assert "vgg19" in " ".join(weights_sha256(get_stylizer("gatys")))
    r = make_recipe("adain", options={"encoder": "small"}, controls={"strength": 0.5,
                    "masks": None}, seed=3, size=64, weights=sha)
    assert r["controls"] == {"strength": 0.5}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(r))
    assert read_recipe(f) == r
    for bad in ("[]", '{"brushwork_recipe": 1}', '{"brushwork_recipe": 1, "method": "adain", '
                '"seed": "x"}', '{"brushwork_recipe": 1, "method": "adain", "colour": 1}', "{"):
        f.write_text(bad)
        with pytest.raises(BrushworkError):
            read_recipe(f)


@pytest.mark.parametrize("inputs, flags, message", [
    (None, ["--shard", "3/2"], "between 1 and N"),
    (None, ["-o", "{tmp}/x.png"], "must be a folder"),
    (None, ["--format", "gif"], "--format"),
    (["{tmp}/empty"], [], "no images"),
    (["{tmp}/nothing*.png"], [], "matches no images"),
    (None, ["--recipe", "{tmp}/missing.json"], "recipe file not found"),
    (None, ["-m", "nosuch"], "nosuch"),
])
def test_batch_refusals_write_nothing(folder, tmp_path, capsys, inputs, flags, message):
    d, style = folder
    (tmp_path / "empty").mkdir()
    inputs = [a.replace("{tmp}", str(tmp_path)) for a in inputs or [str(d)]]
    flags = [a.replace("{tmp}", str(tmp_path)) for a in flags]
    out = tmp_path / "out"
    if "-o" not in flags:
        flags += ["-o", str(out)]
    assert main(["stylize", *inputs, "-s", str(style)] + ADAIN + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("brushwork: error:") and message in err[0]
    assert not out.exists() and not (tmp_path / "x.png").exists()


def test_single_input_flags_for_many_inputs_are_refused(folder, tmp_path, capsys):
    d, style = folder
    assert main(["stylize", str(d / "a.png"), "-s", str(style), "-o", str(tmp_path / "o.png"),
                 "--resume"] + ADAIN) == 2
    assert "several inputs" in capsys.readouterr().err


def test_every_method_names_its_weight_files():
    from brushwork.api import get_stylizer
    for name in ("adain", "johnson", "asma", "gatys"):
        files = [Path(p) for p in get_stylizer(name).weight_files if p is not None]
        assert files and all(f.is_file() for f in files), name


def test_rgba_inputs_keep_their_alpha_and_16_bit_is_written(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    make_photo(d / "p.png", 1)
    rgb = np.asarray(Image.open(d / "p.png"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(d / "q.png")
    style = make_photo(tmp_path / "style.png", 9, (48, 48))
    out = tmp_path / "out"
    assert main(["stylize", str(d), "-s", str(style), "-o", str(out), "--size", "0",
                 "-m", "adain", "--encoder", "small", "-q"]) == 0
    q = Image.open(out / "q.png")
    assert q.mode == "RGBA" and np.array_equal(np.asarray(q)[..., 3], alpha)
    assert Image.open(out / "p.png").mode == "RGB"
    assert main(["stylize", str(d / "p.png"), "-s", str(style), "-o", str(tmp_path / "w.png"),
                 "--bit-depth", "16", "-m", "adain", "--encoder", "small", "-q"]) == 0
    import cv2
    wide = cv2.imread(str(tmp_path / "w.png"), cv2.IMREAD_UNCHANGED)
    assert wide.dtype == np.uint16
    # a folder to JPEG at 16 bits is refused before anything is written
    assert main(["stylize", str(d), "-s", str(style), "-o", str(tmp_path / "j"), "--format",
                 "jpg", "--bit-depth", "16", "-q"]) == 2
    assert not (tmp_path / "j").exists()


def test_recipe_mask_paths_are_relative_to_the_recipe(tmp_path):
    d, style = photo_folder(tmp_path, 1)
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    mask = np.zeros((32, 40), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(jobdir / "mask1.png")
    (jobdir / "recipe.json").write_text(json.dumps(make_recipe(
        "adain", options={"encoder": "small"}, controls={"masks": ["mask1.png"]}, size=0)))
    assert main(["stylize", str(d / "p0.png"), "-s", str(style), "--recipe",
                 str(jobdir / "recipe.json"), "-o", str(tmp_path / "m.png"), "-q"]) == 0
    assert main(["stylize", str(d / "p0.png"), "-s", str(style), "-m", "adain", "--encoder",
                 "small", "--size", "0", "--mask", str(jobdir / "mask1.png"), "-o",
                 str(tmp_path / "m2.png"), "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")),
                          np.asarray(Image.open(tmp_path / "m2.png")))
