"""Many inputs in one run: planning (files, folders, globs, shards), the JSONL manifest, the
in-process runner and the Ray engine (``ray_engine``, optional extra ``brushwork[cluster]``)."""
