"""Trainers: ``brushwork train NAME``. Inference (``core``, ``methods``) never imports this.

``TRAINERS`` is the explicit name -> module table; each module exposes
``add_arguments(parser)`` and ``run(args, callback)``.
"""
from . import adain, asma, cin, classifier, distill, etnet, johnson, linear, sanet, wct
from . import texture_judge
from . import avatar
from . import aams
from . import totalst
from . import efanet
from . import fcs
from . import ctb
from . import styleaware
from . import metastyle
from . import tpfr

TRAINERS = {
    "adain": adain,
    "wct": wct,
    "linear": linear,
    "sanet": sanet,
    "etnet": etnet,
    "distill": distill,
    "johnson": johnson,
    "cin": cin,
    "asma": asma,
    "classifier": classifier,
    "texture-judge": texture_judge,
    "avatar": avatar,
    "aams": aams,
    "totalst": totalst,
    "efanet": efanet,
    "fcs": fcs,
    "ctb": ctb,
    "styleaware": styleaware,
    "metastyle": metastyle,
    "tpfr": tpfr,
}
