"""Checks on an app's run folder shared by the app tests."""

from __future__ import annotations

from pathlib import Path

#: What Hydra itself writes into a run folder (the rest is the app's).
HYDRA_NAMES = (".hydra",)


def app_outputs(folder: Path) -> list[Path]:
    """The files the app wrote into ``folder`` (not Hydra's ``.hydra/`` nor its log)."""
    return [p for p in folder.iterdir() if p.is_file() and p.name not in HYDRA_NAMES and p.suffix != ".log"]


def assert_metrics_last(folder: Path) -> None:
    """``metrics.json`` exists and no other output of the app is newer."""
    metrics = folder / "metrics.json"
    assert metrics.is_file(), sorted(p.name for p in folder.iterdir())
    others = [p for p in app_outputs(folder) if p != metrics]
    assert others, "the app wrote nothing besides metrics.json"
    newer = [p.name for p in others if p.stat().st_mtime_ns > metrics.stat().st_mtime_ns]
    assert not newer, f"written after metrics.json: {newer}"
