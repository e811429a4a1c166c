"""Everything that touches MLX, behind one interface (`Engine`)."""

from .engine import Engine

__all__ = ["Engine"]
