"""Analysis and transformation passes over the IR (importable as graphprune.passes)."""

# `passes/` is mapped into the graphprune namespace; importing it as a top-level package (python -m
# pytest from the repo root puts the root on sys.path) would load every pass twice under two names.
if __name__ != "graphprune.passes":
    raise ImportError("import this package as graphprune.passes, not as top-level 'passes'")
