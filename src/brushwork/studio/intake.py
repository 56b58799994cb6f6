"""Checking a job request before anything is stored.

:func:`check_request` reads the form fields of ``POST /api/jobs`` (method, controls, options,
seed, size, style weights), refuses what the CLI would refuse with the CLI's message (the
``BrushworkError`` text), writes the uploads to a private temporary folder, checks each file
with the CLI's loaders (the pixel guard of ``core/image``, corrupt files, mask sizes) and
returns a :class:`Checked` request whose folder the caller moves into place or removes. A
refusal is a :class:`Refused` with an HTTP status and a one-line message.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import protocol, validate
from ..core.image import IMAGE_SUFFIXES, SAVE_FORMATS, load_image, load_mask, long_side_size
from ..errors import BrushworkError
from ..methods import get_method
from ..video.temporal import CONSISTENCY_MODES
from .catalog import DEFAULT_SIZE, OPTION_CHOICES

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
KEEP_SUFFIXES = set(IMAGE_SUFFIXES) | set(SAVE_FORMATS) | {".gif"} | set(VIDEO_SUFFIXES)
MAX_FILES = 64        # uploads in one request
MAX_FIELD = 1 << 16   # bytes of one text field (controls, options, ...)


class Refused(Exception):
    """A request the studio turns down: ``status`` (413, 422, 429, ...) and a one-line
    message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Checked:
    """A checked request: its job row (without id and client) and the temporary folder that
    holds its files."""
    kind: str
    method: str
    request: dict[str, Any]
    folder: Path


def _refuse_error(e: BrushworkError, status: int = 422) -> Refused:
    msg = str(e)
    # the pixel guard of core/image (and of video frames): too large, not malformed
    return Refused(413 if "pixel guard" in msg else status, msg)


def _text(form, name: str, default: str | None = None) -> str | None:
    v = form.get(name)
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return default
    if not isinstance(v, str):
        raise Refused(422, f"{name}: expected a text field, got a file")
    if len(v) > MAX_FIELD:
        raise Refused(413, f"{name}: field longer than {MAX_FIELD} bytes")
    return v


def _json(form, name: str, kind: type, default):
    text = _text(form, name)
    if text is None:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise Refused(422, f"{name}: not valid JSON ({e.msg} at column {e.colno})") from None
    if value is None:
        return default
    if not isinstance(value, kind):
        raise Refused(422, f"{name}: expected a JSON {kind.__name__ if kind is not dict else 'object'}, "
                           f"got {type(value).__name__}")
    return value


def _int_field(form, name: str, default, check):
    text = _text(form, name)
    if text is None:
        return check(default)
    try:
        v = int(text.strip())
    except ValueError:
        raise Refused(422, f"{name}: {text!r} is not a whole number") from None
    try:
        return check(v)
    except BrushworkError as e:
        raise Refused(422, str(e)) from None


def _files(form, name: str) -> list:
    out = []
    for v in form.getlist(name):
        if isinstance(v, str):
            if v.strip():
                raise Refused(422, f"{name}: expected a file upload, got a text field")
            continue
        out.append(v)
    return out


def _display_name(upload) -> str:
    name = Path(str(upload.filename or "")).name
    return re.sub(r"[\x00-\x1f\x7f]", "", name)[:200] or "upload"


def _suffix(upload) -> str:
    s = Path(str(upload.filename or "")).suffix.lower()
    return s if s in KEEP_SUFFIXES else ""


def _is_video(upload) -> bool:
    ctype = str(getattr(upload, "content_type", "") or "")
    return _suffix(upload) in VIDEO_SUFFIXES or ctype.startswith("video/")


def _save(upload, path: Path) -> Path:
    upload.file.seek(0)
    with open(path, "wb") as f:
        shutil.copyfileobj(upload.file, f, 1 << 20)
    return path


def _check_image(path: Path, label: str, max_pixels):
    """Load an uploaded image with the CLI's loader (pixel guard first, then a full decode);
    its messages name the upload, not the temporary file."""
    try:
        return load_image(path, max_pixels=max_pixels)
    except BrushworkError as e:
        raise _refuse_error(BrushworkError(str(e).replace(str(path), label))) from None


def check_request(form, tmp_root: Path, *, max_pixels: int | None = None) -> Checked:
    """Check the fields and files of a job request (see the module docstring)."""
    method = _text(form, "method", "gatys")
    try:
        cls = get_method(method)
    except BrushworkError as e:
        raise Refused(422, str(e)) from None
    controls = _json(form, "controls", dict, {})
    options = _json(form, "options", dict, {})
    style_weights = _json(form, "style_weights", list, None)
    seed = _int_field(form, "seed", 0, validate.check_seed)
    size = _int_field(form, "size", DEFAULT_SIZE, validate.check_size)
    consistency = _text(form, "consistency", "flow")
    if consistency not in CONSISTENCY_MODES:
        raise Refused(422, f"consistency: {consistency!r} is not one of "
                           f"{', '.join(CONSISTENCY_MODES)}")

    for name in controls:
        c = cls.controls.get(name)
        if c is not None and c.kind == "images":
            hint = "'mask' files, one per style" if name == "masks" else f"an 'image_{name}' file"
            raise Refused(422, f"control {name}: send it as {hint}, not in the controls JSON")
    init = controls.get("init")
    if "init" in cls.controls and init is not None and init not in ("content", "noise"):
        raise Refused(422, "control init: the studio starts from content or noise (a start "
                           "image path would name a file on the server)")
    if "weights" in options:
        raise Refused(422, "option weights: the studio uses the shipped weights (a weight path "
                           "would name a file on the server)")
    try:
        options = validate.check_options(cls, options)
    except BrushworkError as e:
        raise Refused(422, str(e)) from None
    for k, v in options.items():
        allowed = OPTION_CHOICES.get(k)
        if allowed is not None and v not in allowed:
            raise Refused(422, f"option {k}: {v!r} is not one of {', '.join(allowed)}")

    content_up = _files(form, "content")
    if len(content_up) != 1:
        raise Refused(422, "give one content image or video (the 'content' file)")
    content_up = content_up[0]
    styles_up = _files(form, "style")
    masks_up = _files(form, "mask")
    images_up = {}
    for key in form.keys():
        if key.startswith("image_"):
            name = key[len("image_"):]
            c = cls.controls.get(name)
            if c is None or c.kind != "images" or name == "masks" \
                    or name not in _visible(cls):
                raise Refused(422, f"method {method!r} has no image control {name!r}")
            ups = _files(form, key)
            if len(ups) != 1:
                raise Refused(422, f"{key}: give one file")
            images_up[name] = ups[0]
    n_files = 1 + len(styles_up) + len(masks_up) + len(images_up)
    if n_files > MAX_FILES:
        raise Refused(413, f"{n_files} files in one request; at most {MAX_FILES}")

    # the checks every method makes first (style images it takes or refuses, style weights,
    # each control's name and value), with the method's own messages
    given = dict(controls)
    if masks_up:
        given["masks"] = [f"mask{i + 1}" for i in range(len(masks_up))]
    for name in images_up:
        given[name] = name
    try:
        protocol.begin(cls, [None] * len(styles_up), style_weights, given)
    except BrushworkError as e:
        raise Refused(422, str(e)) from None
    if masks_up and cls.capabilities.takes_style_images and len(masks_up) != len(styles_up):
        raise Refused(422, f"{len(masks_up)} mask(s) given for {len(styles_up)} style(s)")

    folder = Path(tmp_root) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        req = _store_files(folder, content_up, styles_up, masks_up, images_up, size, max_pixels)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    kind = req.pop("kind")
    req.update(controls=controls, options=options, seed=seed, size=size,
               style_weights=style_weights, consistency=consistency)
    return Checked(kind, method, req, folder)


def _visible(cls):
    from ..cli.common import visible_controls
    return visible_controls(cls)


def _store_files(folder, content_up, styles_up, masks_up, images_up, size, max_pixels):
    names = {"content": _display_name(content_up),
             "styles": [_display_name(u) for u in styles_up]}
    content = _save(content_up, folder / ("content" + _suffix(content_up)))
    label = f"content ({names['content']})"
    if _is_video(content_up):
        from ..video.io import probe
        try:
            info = probe(content)
        except BrushworkError as e:
            raise _refuse_error(BrushworkError(str(e).replace(str(content), label))) from None
        kind, hw = "video", (info.height, info.width)
    else:
        kind = "image"
        hw = tuple(_check_image(content, label, max_pixels).shape[-2:])
    out_hw = hw if size is None else long_side_size(hw, size)
    try:
        validate.check_frame_size(out_hw, f"{label} at size {size or 'kept'}",
                                  "use a larger image or size")
    except BrushworkError as e:
        raise Refused(422, str(e)) from None
    styles = []
    for i, (up, shown) in enumerate(zip(styles_up, names["styles"])):
        p = _save(up, folder / f"style{i + 1}{_suffix(up)}")
        _check_image(p, f"style {i + 1} ({shown})", max_pixels)
        styles.append(p.name)
    masks = []
    for i, up in enumerate(masks_up):
        p = _save(up, folder / f"mask{i + 1}{_suffix(up)}")
        label_m = f"mask {i + 1} ({_display_name(up)})"
        _check_image(p, label_m, max_pixels)
        try:
            load_mask(p, hw, max_pixels=max_pixels)
        except BrushworkError as e:
            raise _refuse_error(BrushworkError(str(e).replace(str(p), label_m))) from None
        masks.append(p.name)
    images = {}
    for name, up in images_up.items():
        p = _save(up, folder / f"{name}{_suffix(up)}")
        _check_image(p, f"{name} ({_display_name(up)})", max_pixels)
        images[name] = p.name
    return {"kind": kind, "content": content.name, "styles": styles, "masks": masks,
            "images": images, "names": names, "content_hw": list(hw)}
