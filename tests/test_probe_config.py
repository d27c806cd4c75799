"""Probe configs from defaults, presets and string params; the registry."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.probe import get_probe, make_config, parse_params, presets_of


def test_params_are_coerced_to_the_config_types():
    cfg = make_config(
        "atlas",
        params=parse_params(
            ["n_inputs=12", "probe_c=0.5", "random_control=false", "methods=pca", "dataset=words"]
        ),
    )
    assert cfg.n_inputs == 12 and cfg.probe_c == 0.5 and cfg.random_control is False
    assert cfg.methods == ("pca",) and cfg.dataset == "words"


def test_preset_then_params_override():
    assert "quick" in presets_of("atlas")
    cfg = make_config("atlas", preset="quick", params={"n_inputs": "50"})
    assert cfg.methods == ("pca",) and cfg.random_control is False and cfg.n_inputs == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"params": {"n_input": "3"}}, "no parameter n_input"),
        ({"params": {"n_inputs": "many"}}, "not a valid"),
        ({"params": {"random_control": "maybe"}}, "not a valid"),
        ({"preset": "nope"}, "no preset 'nope'"),
    ],
)
def test_bad_params_are_named(kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        make_config("atlas", **kwargs)


def test_unknown_probe_and_malformed_param():
    with pytest.raises(WorkbenchError, match="available: atlas"):
        get_probe("atlass")
    with pytest.raises(WorkbenchError, match="key=value"):
        parse_params(["n_inputs"])
