"""Widget pieces shared by the probes' explorers.

Every widget here is testable without a browser: controls are ipywidgets whose ``value`` a test
can set, and a click on a figure goes through a public method (``PatchPicker.select``) that the
browser's click handler also calls.
"""

from workbench.widgets.patch_picker import PatchPicker

__all__ = ["PatchPicker"]
