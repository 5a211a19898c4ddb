"""What the flat engine raises for its callers to take another path."""


class SparseGradient(RuntimeError):
    """A sparse gradient reached the flat engine, which steps dense gradients only
    (``engine/sparse.py`` steps it)."""
