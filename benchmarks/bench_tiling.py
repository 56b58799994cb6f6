"""Large images tile by tile: time, peak memory, seams and the look against the whole image.

    python benchmarks/bench_tiling.py [--data DATA] [--out runs/bench_tiling]
        [--cases adain-small,wct-small,gatys] [--gatys-steps 30] [--gatys-tile-steps 3]
        [--seam-tile 256] [--io cli|lean] [--max-memory CASE=SIZE] [--no-look]

* The content is one photo of ``DATA/content`` (``budgie_casa_mila.jpg``; scikit-image's
  astronaut without ``DATA``) upscaled to 12000x8000 (96 MP; 6000x4000 for gatys), the style
  Starry Night (``DATA/classic_styles``; scikit-image's coffee without it).
* Each large run is a subprocess that loads the image, stylises it with ``tile="auto"`` and
  ``max_memory`` (adain small: 4G, wct small: 8G, gatys: 16G) and saves a TIFF, as
  ``brushwork stylize`` does; its wall time per phase and its peak resident memory (the
  kernel's ``ru_maxrss`` for that child, and the peak after each phase) are reported.
  ``--io cli`` loads and saves with ``brushwork.core.image`` (the command's path), ``--io lean``
  decodes to uint8 and converts to float in one step and quantises in strips when saving, which
  isolates the stylisation's own peak.
* Seam ratio (``brushwork.core.tiling.seam_ratio``): mean squared gradient across the tile
  borders (within 2 px of the band centres where neighbouring tiles hand over) against the rest
  of the image; 1.0 = borders as smooth as the interior.
* The look at 1024 px: the same photo at 1024 px stylised whole and tile by tile (``--seam-tile``
  px tiles, so there are borders), each scored by ``brushwork.eval.metrics.evaluate``
  (content, Gram, mean/std, Frechet, SSIM), plus the mean absolute pixel difference between the
  two and the seam ratio of the tiled one; and the 96 MP result shrunk to 1024 px, scored the
  same way.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTO = "budgie_casa_mila.jpg"
PAINTING = "starry_night_van_gogh_1889.jpg"

CASES = {
    # name: method, method options, (width, height), max memory, extra controls
    "adain-small": ("adain", {"encoder": "small"}, (12000, 8000), "4G", {}),
    "wct-small": ("wct", {"encoder": "small"}, (12000, 8000), "8G", {}),
    "gatys": ("gatys", {}, (6000, 4000), "16G", {}),
}


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------ inputs
def source_images(data: Path | None):
    from PIL import Image
    if data is not None and (data / "content" / PHOTO).exists():
        return Image.open(data / "content" / PHOTO).convert("RGB"), \
            Image.open(data / "classic_styles" / PAINTING).convert("RGB")
    from skimage import data as sk
    return Image.fromarray(sk.astronaut()), Image.fromarray(sk.coffee())


def prepare(data: Path | None, out: Path) -> dict:
    """The content at each size (TIFF, uncompressed: fast to read and write), the style."""
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    photo, painting = source_images(data)
    files = {"style": out / "style.png"}
    painting.save(files["style"])
    for w, h in {c[2] for c in CASES.values()} | {(1024, 683)}:
        f = out / f"content_{w}x{h}.tif"
        if not f.exists():
            photo.resize((w, h), Image.BICUBIC).save(f)
        files[(w, h)] = f
    return files


# ------------------------------------------------------------------------ one large run
def lean_load(path):
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    h, w = a.shape[:2]
    t = torch.empty(1, 3, h, w)
    for c in range(3):
        t[0, c] = torch.from_numpy(np.ascontiguousarray(a[..., c])).float().div_(255.0)
    return t


def lean_save(x, path):
    from PIL import Image
    h, w = x.shape[-2:]
    a = np.empty((h, w, 3), np.uint8)
    for y0 in range(0, h, 256):
        s = x[0, :, y0:y0 + 256].permute(1, 2, 0)
        a[y0:y0 + 256] = s.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    Image.fromarray(a).save(path)


def run_one(args) -> int:
    """The subprocess: load, stylise (tile auto, max memory), save; JSON report on stdout."""
    from brushwork.api import stylize_tensors
    from brushwork.core import tiling
    from brushwork.core.image import load_image_info, save_image
    spec = json.loads(args.spec)
    t0 = time.perf_counter()
    info = None
    if spec["io"] == "cli":  # as `brushwork stylize` reads its inputs
        content, info = load_image_info(spec["content"], max_pixels=10 ** 9)
        style = load_image_info(spec["style"])[0]
    else:
        content, style = lean_load(spec["content"]), lean_load(spec["style"])
    t1, rss1 = time.perf_counter(), rss_peak()
    ev = []
    out = stylize_tensors(content, [style], spec["method"], method_options=spec["options"],
                          controls=spec["controls"], tile="auto",
                          max_memory=spec["max_memory"], callback=ev.append)
    t2, rss2 = time.perf_counter(), rss_peak()
    side = [int(e.message.split()[3]) for e in ev if e.kind == "scale" and "tiles of" in e.message]
    grid = _grid(spec, content, side[-1])
    if spec["io"] == "cli":
        save_image(out, spec["output"], info=info)
    else:
        lean_save(out, spec["output"])
    t3 = time.perf_counter()
    print(json.dumps({"load_s": t1 - t0, "stylize_s": t2 - t1, "save_s": t3 - t2,
                      "peak_after_load": rss1, "peak_after_stylize": rss2,
                      "peak_after_save": rss_peak(), "grid": grid,
                      "tiles": max((e.total for e in ev if e.kind == "step"), default=0),
                      "max_memory": tiling.parse_memory(spec["max_memory"])}))
    return 0


def _grid(spec, content, side):
    """The tile grid of a run with ``side`` px tiles (the side its 'scale' event named)."""
    from brushwork.api import get_stylizer
    from brushwork.core.vgg import LAYER_INDEX, LAYER_STRIDE
    from brushwork.core.protocol import begin
    st = get_stylizer(spec["method"], "cpu", **spec["options"])
    hw = tuple(content.shape[-2:])
    if spec["method"] == "gatys":
        c, _ = begin(st, [content], None, spec["controls"])
        deepest = max(c["content_layers"] + c["style_layers"], key=LAYER_INDEX.get)
        plan = st.tile_plan(hw, c, deepest, False, side, None)
        g, off = plan.grid, 0
        fit = plan.fit_hw
    else:
        c, _ = begin(st, [content], None, {**st.control_defaults, **spec["controls"]})
        passes = st.passes(c)
        mult = max(LAYER_STRIDE[layer] for p in passes for layer in p.layers)
        b = min(16, hw[0] - 1, hw[1] - 1) if st.border else 0
        plan = st.tile_plan(hw, passes, 1, side, None, b, mult)
        from brushwork.core.tiling import tile_grid
        g = tile_grid(plan.hv, plan.wv, plan.tile, margin=plan.margin, feather=plan.feather,
                      align=plan.mult)
        off, fit = b, None
    return {"tile": g.tile, "margin": g.margin, "feather": g.feather, "n": len(g),
            "borders_y": [v - off for v in g.borders_y], "borders_x": [v - off for v in g.borders_x],
            "fit": fit}


def launch(spec: dict, out_dir: Path) -> dict:
    """Run one case in a child process; its own peak resident memory from wait4."""
    cmd = [sys.executable, __file__, "_run", json.dumps(spec)]
    log_out, log_err = out_dir / "child.out", out_dir / "child.err"
    t0 = time.perf_counter()
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{spec['method']} failed ({p.returncode}): "
                         f"{log_err.read_text().strip()[-2000:]}")
    rep = json.loads(log_out.read_text().strip().splitlines()[-1])
    rep.update(wall_s=wall, peak_rss=ru.ru_maxrss * 1024, cpu_s=ru.ru_utime + ru.ru_stime)
    return rep


# ------------------------------------------------------------------------------ measures
def read_image(path) -> torch.Tensor:
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        a = np.array(im.convert("RGB"))  # a writable copy
    return torch.from_numpy(a).permute(2, 0, 1)[None]  # uint8, (1, 3, H, W)


def shrink(x: torch.Tensor, size=(683, 1024)) -> torch.Tensor:
    """A uint8 image at 1024 px (area average), float in [0, 1]."""
    import torch.nn.functional as F
    return F.interpolate(x.float().div_(255.0), size=size, mode="area").clamp(0, 1)


def look(out, content, style, tiled=None):
    from brushwork.eval import metrics
    row = metrics.evaluate(out, content, style)
    if tiled is not None:
        row["pixel diff"] = float((out - tiled).abs().mean())
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA if DATA.exists() else None)
    p.add_argument("--out", type=Path, default=Path("runs/bench_tiling"))
    p.add_argument("--cases", default="adain-small,wct-small,gatys")
    p.add_argument("--gatys-steps", type=int, default=30)
    p.add_argument("--gatys-tile-steps", type=int, default=3)
    p.add_argument("--seam-tile", type=int, default=256)
    p.add_argument("--io", choices=("cli", "lean"), default="cli")
    p.add_argument("--max-memory", action="append", default=[], metavar="CASE=SIZE",
                   help="another memory budget for a case, e.g. gatys=8G")
    p.add_argument("--no-look", action="store_true",
                   help="only the large runs (time, memory, seams), not the 1024 px comparison")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from brushwork.api import stylize_tensors
    from brushwork.core import tiling

    files = prepare(args.data, args.out)
    style_t = read_image(files["style"]).float() / 255.0
    small = read_image(files[(1024, 683)]).float() / 255.0
    results = {}
    for name in args.cases.split(","):
        method, options, (w, h), mem, controls = CASES[name]
        mem = dict(m.split("=", 1) for m in args.max_memory).get(name, mem)
        if method == "gatys":
            controls = {"steps": args.gatys_steps, "tile_steps": args.gatys_tile_steps}
        output = args.out / f"{name}_{w}x{h}_{args.io}.tif"
        spec = {"method": method, "options": options, "controls": controls,
                "content": str(files[(w, h)]), "style": str(files["style"]),
                "max_memory": mem, "max_memory_bytes": tiling.parse_memory(mem),
                "output": str(output), "io": args.io}
        rep = launch(spec, args.out)
        rep["budget"] = mem
        big = read_image(output)
        g = rep["grid"]
        rep["seam"] = tiling.seam_ratio(big, g["borders_y"], g["borders_x"])
        results[name] = rep
        if args.no_look:
            continue
        # the look at 1024 px: whole vs tiled, and the big result shrunk
        ctl = controls if method != "gatys" else {"steps": args.gatys_steps,
                                                   "tile_steps": args.gatys_tile_steps}
        whole = stylize_tensors(small, [style_t], method, method_options=options, controls=ctl)
        ev = []
        tiled = stylize_tensors(small, [style_t], method, method_options=options, controls=ctl,
                                tile=args.seam_tile, callback=ev.append)
        rep["look"] = {"whole @1024": look(whole, small, style_t),
                       f"tiled ({args.seam_tile} px) @1024": look(tiled, small, style_t, whole),
                       f"{w}x{h} shrunk to 1024": look(shrink(big), small, style_t, whole)}
        rep["seam_1024"] = _small_seam(method, options, ctl, small, tiled, args.seam_tile)
        rep["seam_1024_whole"] = _small_seam(method, options, ctl, small, whole, args.seam_tile)
        print(f"{name}: {json.dumps(rep)[:400]}", file=sys.stderr, flush=True)
    print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _small_seam(method, options, controls, content, image, tile):
    """Seam ratio of a 1024 px result at the borders of the grid a ``tile`` px run uses."""
    from brushwork.api import get_stylizer
    from brushwork.core import tiling
    from brushwork.core.protocol import begin
    from brushwork.core.vgg import LAYER_STRIDE
    st = get_stylizer(method, "cpu", **options)
    hw = tuple(content.shape[-2:])
    if method == "gatys":
        c, _ = begin(st, [content], None, controls)
        g = st.tile_plan(hw, c, "relu5_1", False, tile, None).grid
        off = 0
    else:
        c, _ = begin(st, [content], None, {**st.control_defaults, **controls})
        passes = st.passes(c)
        mult = max(LAYER_STRIDE[layer] for p in passes for layer in p.layers)
        b = min(16, hw[0] - 1, hw[1] - 1) if st.border else 0
        plan = st.tile_plan(hw, passes, 1, tile, None, b, mult)
        g = tiling.tile_grid(plan.hv, plan.wv, plan.tile, margin=plan.margin,
                             feather=plan.feather, align=plan.mult)
        off = b
    return tiling.seam_ratio(image, [v - off for v in g.borders_y],
                             [v - off for v in g.borders_x])


def table(results, args) -> str:
    gib = 1024 ** 3
    lines = ["| case | size | max memory | tile (px) | tiles | load / stylise / save (s) | "
             "total wall (s) | total CPU (s) | peak RSS (GiB) | peak after load / stylise / save "
             "| seam ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        method, options, (w, h), mem, _ = CASES[name]
        lines.append(
            f"| {name} | {w}x{h} | {r.get('budget', mem)} | {r['grid']['tile']} | {r['grid']['n']} | "
            f"{r['load_s']:.0f} / {r['stylize_s']:.0f} / {r['save_s']:.0f} | {r['wall_s']:.0f} | "
            f"{r['cpu_s']:.0f} | {r['peak_rss'] / gib:.2f} | {r['peak_after_load'] / gib:.2f} / {r['peak_after_stylize'] / gib:.2f} / "
            f"{r['peak_after_save'] / gib:.2f} | {r['seam']:.3f} |")
    lines += ["", "| case | image | content | Gram | mean/std | Frechet | SSIM | pixel diff vs "
              "whole | seam ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for label, m in r.get("look", {}).items():
            seam = ""
            if label.startswith("whole"):
                seam = f"{r['seam_1024_whole']:.3f}"
            elif label.startswith("tiled"):
                seam = f"{r['seam_1024']:.3f}"
            lines.append(f"| {name} | {label} | {m['content']:.3f} | {m['gram']:.3f} | "
                         f"{m['meanstd']:.3f} | {m['frechet']:.3f} | {m['ssim']:.3f} | "
                         f"{m.get('pixel diff', 0):.4f} | {seam} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_run":
        sys.exit(run_one(argparse.Namespace(spec=sys.argv[2])))
    sys.exit(main())
