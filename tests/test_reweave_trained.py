"""Reweaving trained into the model: the pair of zoo recipes and the probe's view of them."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from probes import reweave
from probes.reweave import trained
from probes.reweave.operator import reweave as reweaving
from workbench.errors import DataError
from workbench.models import load_model
from workbench.threads import torch_threads
from workbench.zoo import neox_recall, neox_reweave
from workbench.zoo.training import sha256_file

TINY = ((3, 32, 4),)
"""Three steps of four 32-token windows."""


def _train(tmp_path, name, **kwargs):
    losses: list[float] = []
    with torch_threads(1):
        loaded, op, _counts, _loss = neox_reweave.train(
            0,
            tmp_path / name,
            phases=TINY,
            on_step=lambda _step, _model, loss: losses.append(loss),
            **kwargs,
        )
    return loaded, op, losses


def test_reweaving_at_gate_zero_reproduces_the_control_exactly(tmp_path):
    with torch_threads(1):
        torch.manual_seed(0)
        start, _, _, _ = neox_reweave.train(0, tmp_path / "start", reweaving=False, phases=())
        op = neox_reweave.make_operator(start.d_model, gate=0.0)
        batch = start.encode_texts(
            ["<|endoftext|> kv " + " ".join(neox_recall.vocabulary()[0][:20])]
        )
        plain = start.forward(batch).logits
        with reweaving(start, op):
            woven = start.forward(batch).logits
    assert torch.equal(plain, woven)  # at initialisation: the same logits, bit for bit

    control, none, control_losses = _train(tmp_path, "control", reweaving=False)
    closed, op, closed_losses = _train(tmp_path, "closed", reweaving=True, gate=0.0)
    _, _, opened_losses = _train(tmp_path, "opened", reweaving=True, gate=0.1)
    assert none is None and op is not None and float(op.gate()) == 0.0
    assert closed_losses == control_losses  # and every step after it
    for key, value in control.model.state_dict().items():
        assert torch.equal(value, closed.model.state_dict()[key]), key
    assert opened_losses[0] != control_losses[0]  # an open gate does change the model


@pytest.mark.slow
def test_the_recipe_pair_saves_models_the_probe_recognises(tmp_path, monkeypatch):
    monkeypatch.setattr(neox_recall, "EVAL_PROMPTS", 4)
    monkeypatch.setattr(neox_recall, "EVAL_LENGTHS", (16, 32))
    out = {}
    for name, build in (
        (neox_reweave.NAME, neox_reweave.build_reweaved),
        (neox_reweave.CONTROL, neox_reweave.build_control),
    ):
        metrics = build(tmp_path / name, 0, phases=TINY)
        recipe = json.loads((tmp_path / name / "recipe.json").read_text())
        assert recipe["metrics"] == metrics and recipe["name"] == name
        assert recipe["model_sha256"] == sha256_file(tmp_path / name / "model.safetensors")
        assert recipe["pair"] == {"reweaved": neox_reweave.NAME, "control": neox_reweave.CONTROL}
        out[name] = load_model(tmp_path / name)
    with_op, control = out[neox_reweave.NAME], out[neox_reweave.CONTROL]
    assert trained.trained_operator(control) is None
    op = trained.trained_operator(with_op)
    recipe = json.loads((with_op.source / "recipe.json").read_text())
    assert op is not None and (op.sources, op.target) == ((0, 1), 3)
    assert recipe["reweaving"]["gate"] == round(float(op.gate()), 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(out)  # no temporary folder
    with pytest.raises(DataError, match="names no control"):
        recipe.pop("pair")
        (with_op.source / "recipe.json").write_text(json.dumps(recipe))
        trained.control_spec(with_op, reweave.Config())


def test_a_tampered_operator_is_refused(tmp_path):
    source = load_model("zoo:neox-reweave").source
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    data = bytearray((copy / trained.OPERATOR_FILE).read_bytes())
    data[-1] ^= 1
    (copy / trained.OPERATOR_FILE).write_bytes(bytes(data))
    assert (
        hashlib.sha256(bytes(data)).hexdigest()
        != json.loads((copy / "recipe.json").read_text())["reweaving"]["sha256"]
    )
    with pytest.raises(DataError, match="sha256"):
        trained.trained_operator(load_model(copy))


SMALL = {
    "lengths": (16, 64),
    "n_prompts": 12,
    "fit_steps": 4,
    "copy_prompts": 4,
    "attention_prompts": 4,
    "gate_sweep": (0.0, 0.5),
    "corpus_words": 2000,
}


@pytest.mark.slow
def test_the_probe_sets_trained_in_reweaving_beside_the_control_and_post_hoc():
    model = load_model("zoo:neox-reweave")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    result = reweave.run(model, reweave.Config(**SMALL))
    m, a = result.metrics, result.arrays
    conds = [str(c) for c in a["conditions"]]
    assert conds == ["control", "trained", "posthoc_fixed", "posthoc_learned", "ablated"]
    assert a["recall_accuracy"].shape == (5, 2, 2)
    assert result.provenance["control_model"] == "zoo:neox-reweave-control"
    assert 0 < m["trained_gate"] < 1 and (m["sources"], m["target"]) == ([0, 1], 3)
    assert all(torch.equal(v, model.model.state_dict()[k]) for k, v in before.items())
    assert all(not h._forward_hooks and not h._forward_pre_hooks for h in model.model.modules())
    # The control row is what the ordinary probe measures on the control model itself.
    control = reweave.run(load_model("zoo:neox-reweave-control"), reweave.Config(**SMALL))
    base = list(control.arrays["conditions"]).index("base")
    assert np.array_equal(a["recall_accuracy"][0], control.arrays["recall_accuracy"][base])
    assert np.allclose(a["attention_stats"][0], control.arrays["attention_stats"][base])
    for metric in ("recall_trained", "recall_control", "recall_posthoc_fixed"):
        assert metric in m
    assert "recall_by_length_trained" in a
    assert {"recall_vs_length", "gate_sweep", "attention_reweaved"} <= set(result.figures)
    assert "trained with reweaving" in result.figures["attention_reweaved"].layout.title.text
