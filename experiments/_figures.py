"""Figure helpers shared by the apps: the paper's layout of one column per pyramid level,
rows of images, and a last row of error maps with one colour bar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def show_image(ax: Axes, image: torch.Tensor) -> None:
    """Draw a ``(1, C, h, w)`` or ``(C, h, w)`` image in [0, 1] (gray for one channel)."""
    img = image[0] if image.dim() == 4 else image
    arr = img.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    if arr.shape[-1] == 1:
        ax.imshow(arr[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(arr)


def levels_figure(
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[torch.Tensor]]],
    errors: tuple[str, Sequence[np.ndarray]] | None = None,
    *,
    title: str = "",
    error_label: str = "|error|",
) -> Figure:
    """One column per pyramid level, one row per kind of image, and optionally a last row
    of error maps sharing one colour scale (each captioned with its mean).

    Args:
        columns: the column titles (e.g. ``'level 2 (64x64)'``), coarse to fine.
        rows: ``(label, images)`` with one image per column (see :func:`show_image`).
        errors: ``(label, maps)`` with one 2-D array per column, or ``None``.
        title: the figure's title.
        error_label: the colour bar's label.

    Returns:
        The matplotlib figure (the caller saves it with ``_cli.save_figure`` and closes it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = len(rows) + (errors is not None)
    n_cols = len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.8 * n_cols + 1.2, 2.6 * n_rows), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            show_image(axes[r, c], image)
        axes[r, 0].set_ylabel(label)
    if errors is not None:
        label, maps = errors
        vmax = max((float(m.max()) for m in maps), default=1.0) or 1.0
        im = None
        for c, m in enumerate(maps):
            im = axes[-1, c].imshow(m, cmap="magma", vmin=0.0, vmax=vmax)
            axes[-1, c].set_xlabel(f"mean {float(m.mean()):.4f}")
        axes[-1, 0].set_ylabel(label)
        if im is not None:
            fig.colorbar(im, ax=list(axes[-1]), fraction=0.046, pad=0.02, label=error_label)
    for c, name in enumerate(columns):
        axes[0, c].set_title(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig
