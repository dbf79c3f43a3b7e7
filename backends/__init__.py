"""Backends that turn an IR graph into something that runs (importable as graphprune.backends)."""

# See passes/__init__.py: the folder is mapped into the graphprune namespace and must not load twice.
if __name__ != "graphprune.backends":
    raise ImportError("import this package as graphprune.backends, not as top-level 'backends'")
