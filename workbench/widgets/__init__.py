"""Widget pieces shared by the probes' explorers.

Every widget here is testable without a browser: controls are ipywidgets whose ``value`` a test
can set, and a click in the browser sets the same synced trait (``PatchPicker.selected``,
``TokenPicker.selected``) that ``select(i)`` sets from Python. Figures go through
``FigureView`` (see its module for why not ``go.FigureWidget``); clickable pictures are small
anywidgets with a few lines of our own JavaScript, so everything renders offline and at once.
"""

from workbench.widgets.figure_view import FigureView
from workbench.widgets.patch_picker import PatchPicker
from workbench.widgets.token_picker import TokenPicker

__all__ = ["FigureView", "PatchPicker", "TokenPicker"]
