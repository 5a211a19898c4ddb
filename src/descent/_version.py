"""The package version, in a module of its own so that any part of the package can read
it without importing the package (and so everything in it)."""

__version__ = "0.1.0"
