"""The explicit name -> factory table of stylisation methods.

Each factory is a class with ``name``, ``summary``, ``controls`` and ``capabilities``,
constructed as ``METHODS[name](device=..., **options)`` (only the options its capabilities
declare), with a ``stylize(...)`` method following ``brushwork.core.protocol.Stylizer``.
"""
from ..errors import BrushworkError
from .gatys import Gatys
from .adain import AdaIN
from .efdm import EFDM
from .wct import WCT
from .mst import MST
from .linear import Linear
from .sanet import SANet
from .styleswap import StyleSwap
from .etnet import ETNet
from .johnson import Johnson
from .cin import CIN
from .asma import Asma
from .analogy import Analogy
from .aams import AAMS
from .avatar import Avatar
from .totalst import TotalST
from .efanet import EFANet
from .fcs import FCS
from .ctb import CTB
from .styleaware import StyleAware
from .metastyle import MetaStyle
from .tpfr import TPFR

METHODS = {
    "gatys": Gatys,
    "adain": AdaIN,
    "efdm": EFDM,
    "wct": WCT,
    "mst": MST,
    "linear": Linear,
    "sanet": SANet,
    "styleswap": StyleSwap,
    "etnet": ETNet,
    "johnson": Johnson,
    "cin": CIN,
    "asma": Asma,
    "analogy": Analogy,
    "avatar": Avatar,
    "aams": AAMS,
    "totalst": TotalST,
    "efanet": EFANet,
    "fcs": FCS,
    "ctb": CTB,
    "styleaware": StyleAware,
    "metastyle": MetaStyle,
    "tpfr": TPFR,
}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise BrushworkError(f"unknown method {name!r} (available: {', '.join(sorted(METHODS))})") from None
