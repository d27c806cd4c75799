"""Zoo builds with checkpoints, the digest guard, and trajectories with their figures, on a tiny
recipe defined here (a 2-block ViT trained for a handful of steps: seconds)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench.zoo as zoo
from workbench.data.scenes import make_scenes
from workbench.errors import ModelNotFoundError, WorkbenchError
from workbench.models import load_model
from workbench.trajectory import (
    DuplicateCheckpointError,
    Trajectory,
    check_distinct,
    checkpoints_of,
    run_trajectory,
)
from workbench.zoo.registry import ZooEntry
from workbench.zoo.training import (
    IMAGE_MEAN,
    IMAGE_STD,
    RecipeRun,
    log_spaced_steps,
    to_pixel_values,
    write_vit_folder,
)

STEPS = 12


def _build(out_dir: Path, seed: int, *, checkpoints: int = 0, lr: float = 3e-3) -> dict:
    from transformers import ViTConfig, ViTForImageClassification

    run = RecipeRun("tiny-traj", __name__, seed, checkpoints=checkpoints)
    with run.training():
        scenes = make_scenes(64, size=16, seed=seed)
        model = ViTForImageClassification(
            ViTConfig(
                image_size=16,
                patch_size=4,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                num_labels=scenes.n_classes,
                problem_type="multi_label_classification",
            )
        )
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        x = to_pixel_values(scenes.images)
        y = torch.from_numpy(scenes.present().astype(np.float32))

        def write(folder: Path) -> None:
            import copy

            write_vit_folder(copy.deepcopy(model).half(), folder, IMAGE_MEAN, IMAGE_STD)

        run.plan_checkpoints(STEPS)
        run.checkpoint(0, write)
        for step in range(STEPS):
            rows = slice(8 * (step % 8), 8 * (step % 8) + 8)
            loss = model(pixel_values=x[rows], labels=y[rows]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.checkpoint(step + 1, write)
        model = model.half()
    return run.save(
        out_dir,
        lambda f: write_vit_folder(model, f, IMAGE_MEAN, IMAGE_STD),
        metrics={},
        train_loss=loss.item(),
        fields={},
    )


def build_frozen(out_dir: Path, seed: int, *, checkpoints: int = 0) -> dict:
    """The same recipe with a zero learning rate: every checkpoint holds the same weights."""
    return _build(out_dir, seed, checkpoints=checkpoints, lr=0.0)


@pytest.fixture
def tiny_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    entries = {
        "tiny-traj": ZooEntry("tiny-traj", "vit", "test", __name__, 0, builder="_build"),
        "tiny-frozen": ZooEntry("tiny-frozen", "vit", "test", __name__, 0, builder="build_frozen"),
    }
    monkeypatch.setattr(zoo, "ZOO", {**zoo.ZOO, **entries})
    monkeypatch.setenv("WORKBENCH_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("WORKBENCH_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    return tmp_path


def test_log_spaced_steps_start_at_zero_end_at_total_and_crowd_early() -> None:
    steps = log_spaced_steps(1000, 6)
    assert steps[0] == 0 and steps[-1] == 1000 and len(set(steps)) == 6
    gaps = np.diff(steps[1:])
    assert (gaps[1:] >= gaps[:-1]).all()  # gaps grow: early training is sampled densely
    with pytest.raises(WorkbenchError, match="do not fit"):
        log_spaced_steps(3, 5)


def test_checkpoints_are_built_outside_the_zoo_and_load_by_step(tiny_zoo: Path) -> None:
    zoo.build("tiny-traj", checkpoints=4)
    folder = tiny_zoo / "ckpt" / "tiny-traj"
    assert not (tiny_zoo / "zoo" / "tiny-traj").exists()  # the zoo folder is left alone
    index = json.loads((folder / "checkpoints" / "index.json").read_text())
    steps = sorted(int(s) for s in index["steps"])
    assert steps == list(log_spaced_steps(STEPS, 4)) == zoo.zoo_checkpoints("tiny-traj")
    # the last checkpoint is the final model, bit for bit; the first differs from it
    last = load_model(f"zoo:tiny-traj@{STEPS}")
    final = load_model(str(folder))
    assert last.digest() == final.digest()
    assert load_model("zoo:tiny-traj@0").digest() != final.digest()
    with pytest.raises(ModelNotFoundError, match="no checkpoint at step 5; its checkpoints"):
        load_model("zoo:tiny-traj@5")
    with pytest.raises(ModelNotFoundError, match="whole number"):
        load_model("zoo:tiny-traj@last")
    # a checkpoint whose file changed is refused
    weights = folder / "checkpoints" / "step-0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(zoo.ZooChecksumError, match="does not match"):
        load_model("zoo:tiny-traj@0")


def test_digest_guard_names_the_duplicate_steps(tiny_zoo: Path) -> None:
    check_distinct([0, 1, 2], ["a", "b", "c"])  # distinct: fine
    with pytest.raises(DuplicateCheckpointError, match="steps 1 and 2 hold identical"):
        check_distinct([0, 1, 2], ["a", "b", "b"])
    zoo.build("tiny-frozen", checkpoints=3)
    with pytest.raises(DuplicateCheckpointError, match=r"steps 0 and 1, 1 and 12"):
        run_trajectory("zoo:tiny-frozen", measures=("atlas",))


def test_revisions_name_hub_checkpoints_by_step() -> None:
    assert checkpoints_of("org/model", ["step2000", "step100"]) == [
        (100, "org/model@step100"),
        (2000, "org/model@step2000"),
    ]
    with pytest.raises(WorkbenchError, match="names no training step"):
        checkpoints_of("org/model", ["main"])
    with pytest.raises(ModelNotFoundError, match="zoo checkpoint is named by its step"):
        load_model("zoo:vit-scenes", revision="step1")


def test_a_hub_revision_missing_offline_says_how_to_fetch_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for call in (
        lambda: load_model("EleutherAI/pythia-70m", revision="step1000"),
        lambda: load_model("EleutherAI/pythia-70m@step1000"),
    ):
        with pytest.raises(ModelNotFoundError, match="at revision 'step1000'") as err:
            call()
        assert "--revision step1000 --local-dir ./models/pythia-70m-step1000" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="is not a branch"):
        load_model("EleutherAI/pythia-70m", revision="step 1000")


@pytest.mark.slow
def test_trajectory_measures_every_checkpoint_and_draws_the_figures(tiny_zoo: Path) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    zoo.build("tiny-traj", checkpoints=3)
    args = ["trajectory", "--model", "zoo:tiny-traj", "--measure", "atlas"]
    cli = CliRunner().invoke(
        app,
        [
            *args,
            "--out",
            str(tiny_zoo / "cli"),
            "--param",
            "atlas.n_inputs=24",
            "--param",
            "atlas.folds=2",
        ],
    )
    assert cli.exit_code == 0, cli.output
    traj = Trajectory.load(tiny_zoo / "cli")
    bad = CliRunner().invoke(app, [*args, "--out", str(tiny_zoo / "x"), "--param", "n_inputs=2"])
    assert bad.exit_code == 2 and "atlas.KEY=VALUE" in bad.output
    assert traj.steps == [0, 1, STEPS]
    assert len(set(traj.digests)) == 3
    acc = np.array(traj.atlas)
    assert acc.shape == (3, 3)  # steps x (embed + 2 blocks)
    assert ((acc >= 0) & (acc <= 1)).all()
    heat = traj.figures()["decodability"].data[0]
    assert np.allclose(np.array(heat.z), acc.T)  # layers down, steps across
    assert list(heat.x) == ["0", "1", str(STEPS)]
    saved = traj.save(tiny_zoo / "out")
    assert Trajectory.load(saved).atlas == traj.atlas
    assert (saved / "decodability.html").is_file()


def test_recitation_and_binding_figures_follow_the_numbers() -> None:
    traj = Trajectory(
        "zoo:x",
        [0, 10, 100],
        ["a", "b", "c"],
        recitation={
            "strict:0": [0, 0, 0],
            "loose:0": [0, 0, 0],
            "strict:64": [0, 0.5, 1],
            "loose:64": [0, 0.75, 1],
            "perplexity": [300.0, 40.0, 20.0],
        },
        binding={"headline": [0.5, 0.6, 0.7], "pixel_control": [0.55, 0.55, 0.55]},
    )
    figs = traj.figures()
    with pytest.raises(DuplicateCheckpointError, match="steps 10 and 100"):
        dataclasses.replace(traj, digests=["a", "b", "b"]).figures()
    rec = {t.name: list(t.y) for t in figs["recitation"].data}
    assert rec["64x (exact)"] == [0, 0.5, 1] and rec["unseen (loose)"] == [0, 0, 0]
    assert rec["perplexity"] == [300.0, 40.0, 20.0]
    bind = {t.name: list(t.y) for t in figs["binding"].data}
    assert bind["headline"] == [0.5, 0.6, 0.7] and bind["pixel control"] == [0.55] * 3


@pytest.mark.slow
def test_trajectory_notebook_shows_a_saved_trajectory(tmp_path: Path) -> None:
    import nbformat
    import papermill as pm

    from workbench.runner import NOTEBOOKS

    folder = Trajectory(
        "zoo:x",
        [0, 10, 100],
        ["a", "b", "c"],
        layer_names=["embed", "block 0"],
        atlas=[[0.2, 0.2], [0.3, 0.5], [0.3, 0.9]],
        atlas_chance=[0.2, 0.2, 0.2],
        recitation={"strict:0": [0, 0, 0], "loose:0": [0, 0, 0], "perplexity": [9.0, 5.0, 4.0]},
    ).save(tmp_path / "saved")
    executed = tmp_path / "trajectory.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "trajectory.ipynb"),
        str(executed),
        parameters={"saved": str(folder)},
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        kernel_name="python3",
    )
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == 2
