"""Video: frame sources and sinks (:mod:`.io`), temporal consistency for any method
(:mod:`.temporal`), the whole-clip pipeline (:mod:`.pipeline`)."""
