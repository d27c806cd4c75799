"""Interpretability workbench: load a model, capture named sites, run probes, save results."""

from workbench.capture import ActivationCache, capture, hooks
from workbench.edit import edited, edited_copy
from workbench.errors import (
    DataError,
    FamilyError,
    ModelNotFoundError,
    OutputExistsError,
    SiteError,
    WorkbenchError,
)
from workbench.models import LoadedModel, load_model
from workbench.results import ProbeResult
from workbench.store import ActivationStore, build_store, open_store

__version__ = "0.1.0"

__all__ = [
    "ActivationCache",
    "ActivationStore",
    "DataError",
    "FamilyError",
    "LoadedModel",
    "ModelNotFoundError",
    "OutputExistsError",
    "ProbeResult",
    "SiteError",
    "WorkbenchError",
    "build_store",
    "capture",
    "edited",
    "edited_copy",
    "hooks",
    "load_model",
    "open_store",
]
