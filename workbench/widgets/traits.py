"""Synced traits more than one widget uses."""

from __future__ import annotations

from typing import cast

import traitlets

OptionalFloats = traitlets.TraitType[list[float] | None, list[float] | None]


def optional_floats() -> OptionalFloats:
    """A synced list of floats, or None for "nothing to draw".

    traitlets types ``List`` as never None even with ``allow_none=True``; the cast says what the
    trait really holds, so that setting None and testing for it type-check.
    """
    trait = traitlets.List(traitlets.Float(), allow_none=True, default_value=None)
    return cast(OptionalFloats, trait.tag(sync=True))
