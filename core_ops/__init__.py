"""Differentiable, batched, device-agnostic image operators (the gradcv operator layer)."""

from core_ops import color, filters, pyramid

__all__ = ["color", "filters", "pyramid"]
