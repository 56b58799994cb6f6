"""The explicit name -> factory table of stylisation methods.

Each factory is a class with ``name``, ``summary`` and ``controls`` attributes, constructed as
``METHODS[name](device=...)``, with a ``stylize(...)`` method following
``brushwork.protocol.Stylizer``.
"""
from ..errors import BrushworkError
from .gatys import Gatys
from .adain import AdaIN
from .wct import WCT
from .linear import Linear
from .sanet import SANet
from .styleswap import StyleSwap
from .johnson import Johnson
from .cin import CIN
from .asma import Asma

METHODS = {
    "gatys": Gatys,
    "adain": AdaIN,
    "wct": WCT,
    "linear": Linear,
    "sanet": SANet,
    "styleswap": StyleSwap,
    "johnson": Johnson,
    "cin": CIN,
    "asma": Asma,
}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise BrushworkError(f"unknown method {name!r} (available: {', '.join(sorted(METHODS))})") from None
