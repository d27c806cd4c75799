"""Model loading: ``load_model(spec)`` returns a ``LoadedModel`` with named sites."""

from workbench.models.loaded import FAMILIES, SITE_KINDS, HookPoint, LoadedModel, Site, Weight
from workbench.models.loader import load_model, peek_family, resolve_spec

__all__ = [
    "FAMILIES",
    "SITE_KINDS",
    "HookPoint",
    "LoadedModel",
    "Site",
    "Weight",
    "load_model",
    "peek_family",
    "resolve_spec",
]
