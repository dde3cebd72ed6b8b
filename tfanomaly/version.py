"""The package version (a leaf: read by the package and by export)."""

__version__ = "0.1.0"
