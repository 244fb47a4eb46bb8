"""lmforge: make, judge and use your own Transformer language models.

``from lmforge import LM`` is the Python API (see :mod:`lmforge.api`); the ``lmforge``
command is the same library behind a CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lmforge.api import LM


def __getattr__(name: str) -> Any:
    # Importing torch and transformers takes seconds: only do it when the API is used.
    if name == "LM":
        from lmforge.api import LM

        return LM
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")


__all__ = ["LM", "__version__"]
