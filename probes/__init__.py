"""Probes: one sub-package per probe, each ``run(model, config) -> ProbeResult``."""
