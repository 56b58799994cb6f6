"""Evaluation: content/style distances (:mod:`.metrics`), the artist classifier
(:mod:`.classifier`) and style accuracy (:mod:`.style_accuracy`)."""
