"""reweave: contextual memory reweaving (earlier layers' states woven into a later layer),
its effect on recall with length, and what it does to attention.

``run(model, config, data)`` takes texts of your own for the attention measurements as ``data``.
The operator itself (``Reweaving``, the ``reweave`` context manager, ``capture_memory``) lives in
``probes.reweave.operator``. On a model trained with the operator in it (``zoo:neox-reweave``)
the run compares it with the same model trained without, and with the operator added post hoc
(``probes.reweave.trained``).
"""

from probes.reweave.config import METRICS, Config
from probes.reweave.probe import DEFAULT_MODELS, FAMILIES, NAME, run

__all__ = ["DEFAULT_MODELS", "FAMILIES", "METRICS", "NAME", "Config", "run"]
