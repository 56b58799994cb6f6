"""brushwork: neural style transfer toolkit.

    import brushwork
    img = brushwork.stylize("photo.jpg", "painting.jpg", method="gatys", steps=150)
"""
__version__ = "0.1.0"

from .api import get_stylizer, stylize  # noqa: E402
from .errors import BrushworkError, ControlError, ImageError  # noqa: E402

__all__ = ["stylize", "get_stylizer", "BrushworkError", "ControlError", "ImageError", "__version__"]
