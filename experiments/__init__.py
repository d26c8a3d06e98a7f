"""Hydra apps that run each study and benchmark gradcv against the reference libraries."""
