"""Grid geometry (pure Python, no torch): ``rows x cols`` square panels of ``panel_size`` pixels, row by row.

The target panel (B', the one the model fills in) is the last cell; the classic PICO layout is 2x2: ``A | A'`` over
``B | B'``. The config builds it (``DataConfig.layout()``) and panels.py composes pictures on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pico_lightning.packing import check_grid_side


@dataclass(frozen=True)
class Layout:
    """Grid geometry: ``rows x cols`` square panels, the target in the last cell."""

    rows: int = 2
    cols: int = 2
    panel_size: int = 32

    def __post_init__(self) -> None:
        check_grid_side(self.panel_size, self.rows, "rows")
        check_grid_side(self.panel_size, self.cols, "cols")

    @property
    def num_panels(self) -> int:
        return self.rows * self.cols

    @property
    def height(self) -> int:
        return self.rows * self.panel_size

    @property
    def width(self) -> int:
        return self.cols * self.panel_size

    def cell(self, index: int) -> tuple[slice, slice]:
        """Pixel (row, column) slices of panel ``index`` (row-major)."""
        row, col = divmod(index, self.cols)
        size = self.panel_size
        return slice(row * size, (row + 1) * size), slice(col * size, (col + 1) * size)
