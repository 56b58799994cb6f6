"""`brushwork harmonize`: repaint an object pasted into a painting (deep painterly
harmonisation)."""
from __future__ import annotations

import time

from ..core import validate
from .common import with_progress


def add_parser(sub) -> None:
    from ..methods.harmonize import DEFAULTS, MAX_REFINE_SIDE
    d = DEFAULTS
    p = sub.add_parser(
        "harmonize", help="repaint an object pasted into a painting",
        description="Repaint an object pasted into a painting so that it looks painted like "
        "the rest (Luan et al. 2018, deep painterly harmonisation). PAINTING is the original "
        "painting; --paste is the same painting with the object pasted in (same size); "
        "--mask is white where the object is. Only the mask grown by --dilate pixels "
        "changes: the painting outside it is kept exactly.")
    p.add_argument("painting", metavar="PAINTING", help="the painting, without the object")
    p.add_argument("--paste", required=True, metavar="IMAGE",
                   help="the painting with the object pasted in (same size as PAINTING)")
    p.add_argument("--mask", required=True, metavar="MASK",
                   help="white where the pasted object is, black elsewhere (same size)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--steps", type=validate.int_arg(0, what="--steps"), default=d["steps"], metavar="N",
                   help=f"optimisation steps per pass (default {d['steps']})")
    p.add_argument("--size", type=validate.int_arg(16, what="--size"), default=d["size"], metavar="PX",
                   help=f"long side of the rough first pass in pixels (default {d['size']}); "
                        f"the refinement runs at the painting's size, at most "
                        f"{MAX_REFINE_SIDE} px")
    p.add_argument("--dilate", type=validate.int_arg(0, 256, what="--dilate"),
                   default=d["dilate"], metavar="PX",
                   help=f"pixels the mask grows by: the region that may change "
                        f"(default {d['dilate']})")
    for name, what in (("style", "the style (Gram) loss"), ("hist", "the histogram loss"),
                       ("content", "the content loss"), ("tv", "the smoothness (TV) term")):
        p.add_argument(f"--{name}-weight", type=validate.non_negative_float_arg,
                       default=d[f"{name}_weight"], metavar="W",
                       help=f"weight of {what} (default {d[f'{name}_weight']:g})")
    p.add_argument("--seed", type=validate.seed_arg, default=0, metavar="N",
                   help="random seed (same seed, same output)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--max-pixels", type=validate.max_pixels_arg, default=None, metavar="N",
                   help="refuse input images with more pixels (decompression-bomb guard)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_harmonize)


def _size(t) -> str:
    return f"{t.shape[-1]}x{t.shape[-2]}"


def cmd_harmonize(args) -> int:
    from ..core.device import pick_device
    from ..core.image import check_output_path, load_image, load_mask, save_image
    from ..errors import ImageError
    from ..methods.harmonize import harmonize

    t0 = time.perf_counter()
    out_path = check_output_path(args.output, inputs=[args.painting, args.paste, args.mask])
    pick_device(args.device)
    painting = load_image(args.painting, max_pixels=args.max_pixels)
    paste = load_image(args.paste, max_pixels=args.max_pixels)
    mask_img = load_image(args.mask, max_pixels=args.max_pixels)
    ps, qs, ms = _size(painting), _size(paste), _size(mask_img)
    ph, pw = painting.shape[-2:]
    if paste.shape[-2:] != painting.shape[-2:]:
        larger = paste.shape[-2] > ph or paste.shape[-1] > pw
        rel = f"larger than the painting ({ps})" if larger else f"but the painting is {ps}"
        raise ImageError(f"{args.paste}: the paste is {qs} {rel}; --paste must be the painting "
                         f"with the object pasted in, at the painting's size")
    if mask_img.shape[-2:] != painting.shape[-2:]:
        raise ImageError(f"{args.mask}: the mask is {ms} but the painting is {ps}")
    mask = load_mask(mask_img, (ph, pw))
    if (mask > 0.5).sum() == 0:
        raise ImageError(f"{args.mask}: the mask selects nothing (it is all black); paint the "
                         f"object white")
    if (mask > 0.5).all():
        raise ImageError(f"{args.mask}: the mask selects the whole image; leave some of the "
                         f"painting outside it")
    out = with_progress(args, "step", lambda bar: harmonize(
        painting, paste, mask, steps=args.steps, size=args.size, dilate=args.dilate,
        style_weight=args.style_weight, hist_weight=args.hist_weight,
        content_weight=args.content_weight, tv_weight=args.tv_weight, seed=args.seed,
        device=args.device, callback=bar))
    save_image(out, out_path)
    if not args.quiet:
        print(f"wrote {out_path} ({ps}, harmonize) in {time.perf_counter() - t0:.1f} s")
    return 0
