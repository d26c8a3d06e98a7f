"""Hessian + SIFT two-view matching with RANSAC, and the targeted attack on it (see DESIGN.md)."""
