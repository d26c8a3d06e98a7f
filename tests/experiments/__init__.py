"""Tests of the Hydra experiments and their shared utilities."""
