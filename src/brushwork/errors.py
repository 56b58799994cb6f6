"""The one exception type brushwork raises for problems a user can fix.

The CLI turns a :class:`BrushworkError` into a one-line message and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""


class BrushworkError(Exception):
    """A user-facing error: bad input, unknown method or control, unreadable file."""


class ImageError(BrushworkError):
    """An image could not be read, is too large, or cannot be written."""


class ControlError(BrushworkError):
    """A method was given a control it does not support, or a bad value for one."""


class ResourceError(BrushworkError):
    """The machine ran out of something (memory, disk) for this request."""
