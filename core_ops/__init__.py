"""Differentiable, batched, device-agnostic image operators (the gradcv operator layer)."""

from gradcv.core_ops import color, contrib, filters, geometry, losses, pyramid

__all__ = ["color", "contrib", "filters", "geometry", "losses", "pyramid"]
