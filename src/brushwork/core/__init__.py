"""The core every method, trainer and tool builds on; it imports nothing else of brushwork.

* :mod:`.vgg` — the VGG19 encoder: ``vgg(x, ["relu4_1", ...]) -> {name: features}``
* :mod:`.stats` — every feature statistic, written once (mean/std, Gram, covariance, matrix
  powers, whitening-colouring, colour matching)
* :mod:`.losses` — pure loss functions and the tiny modules holding their targets
* :mod:`.blocks` — network blocks (decoders, small encoder, attention, conditional norms)
* :mod:`.color` — luminance and colour transfer
* :mod:`.image` — image loading, resizing, atomic saving
* :mod:`.weights` — safetensors weight files, sha256 checks, the shipped files' manifest
* :mod:`.files` — atomic writes
* :mod:`.device` — devices, bf16, autocast
* :mod:`.memory` — malloc settings that keep freed memory for reuse
* :mod:`.protocol` — the method protocol, controls, capabilities, progress events
* :mod:`.validate` — the checks the CLI, API and studio share
"""
