"""Motion structure: from a clip span to a clean, temporally stable depth sequence."""

from aas_core.depth.video import DepthVideo

__all__ = ["DepthVideo"]
