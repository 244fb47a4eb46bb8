"""lmforge: make, judge and use your own Transformer language models."""

__version__ = "0.1.0"
