"""brushwork: neural style transfer toolkit.

    import brushwork
    img = brushwork.stylize("photo.jpg", "painting.jpg", method="gatys", steps=150)

``stylize`` and ``get_stylizer`` come from :mod:`brushwork.api`, imported on first use (so
``import brushwork`` and commands that do not stylise do not load PyTorch).
"""
__version__ = "0.1.0"

from .errors import BrushworkError, ControlError, ImageError  # noqa: E402

__all__ = ["stylize", "get_stylizer", "BrushworkError", "ControlError", "ImageError", "__version__"]

_API = ("stylize", "get_stylizer")


def __getattr__(name):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'brushwork' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
