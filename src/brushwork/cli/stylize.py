"""`brushwork stylize`, `brushwork methods` and `brushwork demo`."""
from __future__ import annotations

import time

from ..core import validate
from .common import add_method_flags, collect_controls, method_options, parse_style_weights, \
    with_progress


def add_parsers(sub) -> None:
    s = sub.add_parser("stylize", help="stylise an image", description="Stylise CONTENT with "
                       "one or more style images.")
    s.add_argument("content", metavar="CONTENT", help="content image")
    s.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    s.add_argument("--max-pixels", type=validate.max_pixels_arg, default=None,
                   help="refuse input images with more pixels (decompression-bomb guard)")
    add_method_flags(s, "content")
    s.set_defaults(func=cmd_stylize)

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
    from ..api import stylize_tensors
    from ..core.image import check_output_path, load_image, save_image

    t0 = time.perf_counter()
    out_path = check_output_path(args.output, inputs=[args.content, *(args.style or [])])
    styles = args.style or []
    weights = parse_style_weights(args.style_weights, len(styles))
    content = load_image(args.content, max_pixels=args.max_pixels)
    styles = [load_image(s, max_pixels=args.max_pixels) for s in styles]
    out = with_progress(args, "step", lambda bar: stylize_tensors(
        content, styles, args.method, style_weights=weights, size=args.size, seed=args.seed,
        device=args.device, method_options=method_options(args),
        controls=collect_controls(args), callback=bar))
    save_image(out, out_path)
    h, w = out.shape[-2:]
    if not args.quiet:
        print(f"wrote {out_path} ({w}x{h}, {args.method}) in {time.perf_counter() - t0:.1f} s")
    return 0


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
