"""A row of tokens: hover or click one to ask about it; optional shading by a weight per token."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from workbench.errors import DataError
from workbench.widgets.traits import optional_floats


class TokenPicker(anywidget.AnyWidget):
    """Tokens as chips. Hovering one calls ``on_hover(i)``, clicking calls ``on_select(i)``.

    ``shade(weights)`` colours each token by a value in [0, 1] (e.g. the attention a chosen
    query pays to it); hovering a chip also shows its weight in a tooltip.
    """

    _esm = Path(__file__).parent / "js" / "token_picker.js"
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    weights = optional_floats()
    selected = traitlets.Int(-1).tag(sync=True)
    hovered = traitlets.Int(-1).tag(sync=True)

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        on_hover: Callable[[int], None] | None = None,
        on_select: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(tokens=[str(t) for t in tokens])
        self.on_hover = on_hover
        self.on_select = on_select
        self.observe(self._changed, names=["selected", "hovered"])

    def select(self, index: int) -> None:
        """Select token ``index``, as a click on it does."""
        self._check(index)
        if index == self.selected:
            self._changed({"name": "selected", "new": index})
        self.selected = int(index)

    def hover(self, index: int) -> None:
        """Hover token ``index``, as the mouse does."""
        self._check(index)
        if index == self.hovered:
            self._changed({"name": "hovered", "new": index})
        self.hovered = int(index)

    def shade(self, weights: np.ndarray | None) -> None:
        if weights is None:
            self.weights = None
            return
        flat = np.asarray(weights, dtype=float).ravel()
        if flat.size != len(self.tokens):
            raise DataError(f"{flat.size} weights for {len(self.tokens)} tokens")
        self.weights = [float(v) for v in np.nan_to_num(flat)]

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self.tokens):
            raise IndexError(f"token {index} is outside 0..{len(self.tokens) - 1}")

    def _changed(self, change: dict) -> None:
        callback = self.on_select if change["name"] == "selected" else self.on_hover
        if callback is not None and change["new"] >= 0:
            callback(int(change["new"]))
