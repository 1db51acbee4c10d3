"""gpvcli: GPV-1, a general purpose vision model, as a command-line toolkit."""

__version__ = "0.1.0"
