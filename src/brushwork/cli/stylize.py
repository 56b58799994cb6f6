"""`brushwork stylize`, `brushwork methods` and `brushwork demo`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..core import validate
from ..errors import ControlError
from .common import EXIT_USAGE, METHOD_OPTIONS, add_method_flags, collect_controls, \
    method_options, parse_style_weights, with_file_progress, with_progress


def add_parsers(sub) -> None:
    s = sub.add_parser("stylize", help="stylise images (one, or many: files, folders, globs)",
                       description="Stylise CONTENT with one or more style images. With several "
                       "inputs (files, folders, glob patterns), -o is a folder: the method and "
                       "styles load once, a manifest.jsonl there records every file, and a "
                       "file that fails is reported and skipped.")
    s.add_argument("content", metavar="CONTENT", nargs="+",
                   help="content image(s): files, folders (searched recursively) or globs")
    s.add_argument("-o", "--output", required=True,
                   help="output image (.png, .jpg, ...); with several inputs, a folder")
    s.add_argument("--max-pixels", type=validate.max_pixels_arg, default=None,
                   help="refuse input images with more pixels (decompression-bomb guard)")
    s.add_argument("--recipe", metavar="FILE", default=None,
                   help="take method, options, controls, seed, size and style weights from a "
                        "recipe JSON (the studio's and the batch manifest's); flags given here "
                        "override it")
    s.add_argument("--bit-depth", type=validate.bit_depth_arg, default=8,
                   help="bits per channel of the output: 8, or 16 (.png/.tif only)")
    s.add_argument("--tile", type=validate.tile_arg, default=None, metavar="auto|N",
                   help="stylise in overlapping tiles of N px (auto: the memory planner's size; "
                        "default: tile only when the image does not fit --max-memory)")
    s.add_argument("--max-memory", type=validate.memory_arg, default=None, metavar="SIZE",
                   help="memory budget for one image, e.g. 4G or 512M (default: a share of "
                        "the free memory)")
    b = s.add_argument_group("many inputs")
    b.add_argument("--resume", action="store_true",
                   help="skip files whose output exists and matches the manifest")
    b.add_argument("--shard", metavar="K/N", default=None,
                   help="process only share K of N (by a hash of each file's name)")
    b.add_argument("--format", metavar="EXT", default=None,
                   help="output format in a folder (png, jpg, webp, tif; default png)")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data actors (pip install "
                        "'brushwork[cluster]')")
    b.add_argument("--num-cpus", type=validate.int_arg(1, 4096, "--num-cpus"), default=None,
                   help="ray: number of CPU workers (default: the CPUs Ray sees)")
    b.add_argument("--address", default=None,
                   help="ray: join the cluster at this address (default: start a local Ray)")
    add_method_flags(s, "content")
    s.set_defaults(func=cmd_stylize, parser=s, argv=None, recipe_weights=None)

    m = sub.add_parser("methods", help="list methods and their controls")
    m.add_argument("-v", "--verbose", action="store_true", help="describe every control")
    m.set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="stylise a bundled photo with a bundled painting")
    d.add_argument("-o", "--output", default="brushwork_demo.png")
    d.add_argument("--size", type=validate.output_size_arg, default=384,
                   help=f"output long side, {validate.MIN_SIDE}..{validate.MAX_SIDE}")
    d.add_argument("--steps", type=validate.int_arg(0), default=100, help="optimisation steps")
    d.add_argument("--device", default="cpu")
    d.add_argument("--save-inputs", action="store_true", help="also save the content and style")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)


def cmd_stylize(args) -> int:
    if args.recipe:
        args = apply_recipe(args)
    if is_batch(args.content):
        return cmd_batch(args)
    for flag in ("resume", "shard", "format", "num_cpus", "address"):
        if getattr(args, flag):
            raise ControlError(f"--{flag.replace('_', '-')} is for several inputs (a folder, a "
                               f"glob or more than one file)")
    if args.engine != "local":
        raise ControlError("--engine is for several inputs (a folder, a glob or more than one "
                           "file)")
    return cmd_one(args, args.content[0])


def is_batch(content: list[str]) -> bool:
    """Several inputs, a folder or a glob pattern (not an existing file)."""
    from ..batch.plan import GLOB_CHARS

    if len(content) != 1:
        return True
    p = Path(content[0])
    return p.is_dir() or (bool(GLOB_CHARS & set(content[0])) and not p.exists())


def cmd_one(args, content_path) -> int:
    from ..api import get_stylizer, stylize_tensors
    from ..core.image import check_output_path, load_image_info, save_image

    t0 = time.perf_counter()
    inputs = [content_path, *(args.style or [])]
    out_path = check_output_path(args.output, inputs=inputs, bit_depth=args.bit_depth)
    styles = args.style or []
    weights = parse_style_weights(args.style_weights, len(styles))
    if args.recipe_weights is not None:
        check_recipe_weights(get_stylizer(args.method, args.device, **method_options(args)),
                             args.recipe_weights, args.recipe)
    content, info = load_image_info(content_path, max_pixels=args.max_pixels)
    check_output_path(out_path, inputs=inputs, info=info, bit_depth=args.bit_depth)
    styles = [load_image_info(s, max_pixels=args.max_pixels)[0] for s in styles]
    out = with_progress(args, "step", lambda bar: stylize_tensors(
        content, styles, args.method, style_weights=weights, size=args.size, seed=args.seed,
        device=args.device, method_options=method_options(args),
        controls=collect_controls(args), callback=bar, **tile_options(args)))
    save_image(out, out_path, info=info, bit_depth=args.bit_depth)
    h, w = out.shape[-2:]
    if not args.quiet:
        print(f"wrote {out_path} ({w}x{h}, {args.method}) in {time.perf_counter() - t0:.1f} s")
    return 0


def tile_options(args) -> dict:
    return {k: v for k in ("tile", "max_memory") if (v := getattr(args, k)) is not None}


def batch_config(args):
    from ..batch.runner import Config

    styles = args.style or []
    weights = parse_style_weights(args.style_weights, len(styles))
    return Config(method=args.method, styles=tuple(styles),
                  style_weights=None if weights is None else tuple(weights), size=args.size,
                  seed=args.seed, device=args.device, options=method_options(args),
                  controls=collect_controls(args), max_pixels=args.max_pixels,
                  bit_depth=args.bit_depth, stylize_options=tile_options(args))


def cmd_batch(args) -> int:
    from ..batch import plan
    from ..batch.plan import check_output_folder, parse_shard

    t0 = time.perf_counter()
    shard = parse_shard(args.shard) if args.shard is not None else None
    out_dir = check_output_folder(args.output)
    if args.bit_depth == 16 and plan.output_suffix(args.format) not in (".png", ".tif", ".tiff"):
        raise ControlError("--bit-depth 16 needs --format png or tif")
    items = plan.plan(args.content, out_dir, fmt=args.format, shard=shard)
    for it in items:
        validate.check_not_input(it.output, args.style or [], error=ControlError)
    config = batch_config(args)
    if args.engine == "ray":
        from ..batch import ray_engine
        summary = with_file_progress(args, len(items), lambda cb: ray_engine.run(
            items, out_dir, config, resume=args.resume, num_cpus=args.num_cpus,
            address=args.address, callback=cb))
    else:
        from ..batch import runner
        r = runner.Runner(config)  # method, weights and styles: errors here stop everything
        if args.recipe_weights is not None:
            check_recipe_weights(r.stylizer, args.recipe_weights, args.recipe)
        summary = with_file_progress(args, len(items), lambda cb: runner.run(
            items, out_dir, config, resume=args.resume, callback=cb, runner=r))
    for name, reason in summary.failed:
        where = "" if Path(name).name in reason else f"{name}: "
        print(f"brushwork: error: {where}{reason}", file=sys.stderr)
    if not args.quiet:
        n = summary.done + summary.skipped + len(summary.failed)
        print(f"{out_dir}: {summary.done} written, {summary.skipped} already done, "
              f"{len(summary.failed)} failed of {n} ({args.method}) in "
              f"{time.perf_counter() - t0:.1f} s")
    return EXIT_USAGE if summary.failed else 0


# ------------------------------------------------------------------------------ recipes
def apply_recipe(args):
    """Reparse the stylize arguments with the recipe's values as defaults, so flags given on
    the command line still win."""
    from ..core.recipe import read_recipe

    recipe = read_recipe(args.recipe)
    parser = args.parser
    controls = recipe.get("controls", {})
    known = {k[4:] for k in vars(args) if k.startswith("ctl_")}
    unknown = sorted(set(controls) - known)
    if unknown:
        raise ControlError(f"{args.recipe}: unknown control(s) {', '.join(unknown)}")
    options = recipe.get("options", {})
    bad = sorted(set(options) - set(METHOD_OPTIONS))
    if bad:
        raise ControlError(f"{args.recipe}: unknown option(s) {', '.join(bad)}")
    here = Path(args.recipe).parent
    controls = {k: _beside(here, v) if _is_image_control(k) else v for k, v in controls.items()}
    defaults = {"method": recipe["method"], "seed": recipe.get("seed"),
                "size": recipe.get("size") or 0, **options,
                **{f"ctl_{k}": _flag_value(v) for k, v in controls.items()}}
    if recipe.get("style_weights") is not None:
        defaults["style_weights"] = ",".join(str(w) for w in recipe["style_weights"])
    parser.set_defaults(**defaults)
    new = parser.parse_args(args.argv)
    new.recipe_weights = recipe.get("weights") or None
    return new


def _is_image_control(name: str) -> bool:
    from .common import all_controls
    c = all_controls().get(name)
    return c is not None and c.kind == "images"


def _beside(folder: Path, value):
    """Relative image paths in a recipe (masks, maps) are relative to the recipe file."""
    if isinstance(value, list):
        return [_beside(folder, v) for v in value]
    if isinstance(value, str) and not Path(value).is_absolute():
        return str(folder / value)
    return value


def _flag_value(v):
    """A recipe's control value as the CLI would have parsed it from a flag."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return v if all(isinstance(x, str) for x in v) and v else ",".join(map(str, v))
    return str(v)


def check_recipe_weights(stylizer, expected: dict, source) -> None:
    """Refuse to run a recipe with weight files other than the ones it was made with."""
    from ..core.recipe import weights_sha256

    got = weights_sha256(stylizer)
    for name, sha in expected.items():
        if got.get(name) != sha:
            have = got.get(name)
            raise ControlError(f"{source}: the recipe was made with {name} sha256 {sha[:12]}..., "
                               f"this run uses {have[:12] + '...' if have else 'no such file'}; "
                               f"pass --weights with that file to reproduce it")


def cmd_methods(args) -> int:
    from ..methods import METHODS
    from .common import control_flag, visible_controls

    for name, cls in METHODS.items():
        print(f"{name}: {cls.summary}")
        shown = visible_controls(cls)
        if args.verbose:
            for cname, c in shown.items():
                print(f"    {control_flag(cname):24s} {c.help} [default: {c.default}]")
        else:
            print("    controls: " + " ".join(control_flag(n) for n in shown))
    return 0


def cmd_demo(args) -> int:
    from ..api import stylize_tensors
    from ..core.image import check_output_path, save_image, to_tensor
    from .demo import demo_content, swirl_painting

    t0 = time.perf_counter()
    out_path = check_output_path(args.output)
    content, style = to_tensor(demo_content()), to_tensor(swirl_painting())
    out = with_progress(args, "step", lambda bar: stylize_tensors(
        content, [style], "gatys", size=args.size, seed=0, device=args.device,
        controls={"steps": args.steps}, callback=bar))
    save_image(out, out_path)
    if args.save_inputs:
        base = out_path.with_suffix("")
        save_image(content, f"{base}_content.png")
        save_image(style, f"{base}_style.png")
    h, w = out.shape[-2:]
    print(f"wrote {out_path} ({w}x{h}, gatys: scikit-image's 'chelsea' in brushwork's generated "
          f"swirl painting) in {time.perf_counter() - t0:.1f} s")
    return 0
