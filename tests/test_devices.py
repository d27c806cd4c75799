"""Devices and precision: choices checked before any weights are read, every entry point on an
explicit ``device="cpu"`` recording it, and bfloat16 loads giving bfloat16 captures that probes
upcast where they need to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from workbench import capture, load_model
from workbench.cli import app
from workbench.devices import (
    check_load_options,
    normalise_max_memory,
    resolve_device,
    resolve_dtype,
    stated_dtype,
)
from workbench.errors import DeviceError, FamilyError, WorkbenchError
from workbench.models.vim import VimConfig, VisionMamba, save_pretrained
from workbench.probe import Findings, ProbeConfig, make_config, run_frame

cli = CliRunner()
QUICK = ["--preset", "quick", "--param", "n_inputs=24", "--param", "max_points=200"]


def _texts(n: int = 6) -> list[str]:
    return [f"w{i} w{i + 1} w{i + 2} w{i + 3}" for i in range(n)]


# -- choices ----------------------------------------------------------------------------------
def test_auto_picks_the_cpu_here_and_float32_on_it_but_the_stated_dtype_on_an_accelerator():
    assert torch.accelerator.is_available() is False  # this machine; the test reads as the spec
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    olmo = {"torch_dtype": "bfloat16"}
    assert stated_dtype(olmo) == torch.bfloat16 and stated_dtype({"dtype": "float16"})
    assert resolve_dtype("auto", torch.device("cpu"), olmo) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda", 0), olmo) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda", 0), {}) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu"), {}) == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu"), {}) == torch.float16


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "cuda"}, "not available here"),
        ({"device": "cuda:1"}, "not available here"),
        ({"device": "gpu0"}, "is not a device"),
        ({"device": "meta"}, "holds no weights"),
        ({"dtype": "bf16"}, "unknown dtype"),
        ({"dtype": torch.int8}, "models load in"),
        ({"backend": "jax"}, "backend must be"),
        ({"device_map": "everywhere"}, "device_map must be"),
        ({"device_map": {"transformer.h.0": "cuda:0"}}, "not available here"),
        ({"device_map": "auto", "device": "cpu"}, "not both"),
        ({"max_memory": {"cpu": "1GiB"}}, "add device_map='auto'"),
        ({"device_map": "auto", "max_memory": {"cpu": "lots"}}, "is not a size"),
        ({"device_map": "auto", "max_memory": {"0": "1GiB"}}, "not available here"),
    ],
)
def test_bad_loading_choices_are_one_line_each(options, message):
    with pytest.raises(DeviceError) as info:
        check_load_options("causal-lm", **options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_family_limits_name_the_model():
    with pytest.raises(DeviceError, match="zoo:vim-scenes is a vim model, which takes a single"):
        check_load_options("vim", device_map="auto", spec="zoo:vim-scenes")
    with pytest.raises(FamilyError, match="wraps causal LMs"):
        check_load_options("vit", backend="transformer-lens")
    assert normalise_max_memory({"cpu": "2GiB", "disk": 10**9}) == {"cpu": "2GiB", "disk": 10**9}


def test_a_missing_gpu_fails_before_any_weights_are_read(scratch_models, monkeypatch):
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("weights were read before the device was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(DeviceError, match="not available here"):
        load_model(scratch_models["gpt2"], device="cuda")
    with pytest.raises(DeviceError, match="not both"):
        load_model(scratch_models["gpt2"], device="cpu", device_map="auto")


# -- every entry point on device="cpu" ----------------------------------------------------------
def _tiny_vim(folder: Path) -> Path:
    torch.manual_seed(0)
    config = VimConfig(d_model=16, n_layers=2, d_state=4, image_size=32, patch_size=8)
    save_pretrained(VisionMamba(config), folder, torch.float32)
    return folder


@pytest.mark.slow
def test_every_loader_takes_cpu_explicitly_and_the_frame_records_it(scratch_models, tmp_path):
    models = {
        "hf": load_model(scratch_models["gpt2"], device="cpu", dtype="float32"),
        "vit": load_model(scratch_models["vit"], device=torch.device("cpu")),
        "bridge": load_model(scratch_models["gpt2"], device="cpu", backend="transformer-lens"),
        "vim": load_model(_tiny_vim(tmp_path / "vim"), device="cpu"),
        "pmi": load_model("zoo:pmi-stories", device="cpu"),
    }
    frame = run_frame(
        name="where",
        config=ProbeConfig,
        families=("causal-lm", "vit", "vim", "pmi"),
        figures=lambda r: {},
    )(lambda m, c, d: Findings({"n": 1.0}, {}, "s"))
    for kind, lm in models.items():
        assert lm.device == torch.device("cpu"), kind
        assert all(p.device.type == "cpu" for p in lm.model.parameters()), kind
        prov = frame(lm).provenance
        assert prov["device"] == "cpu" and prov["dtype"] == "float32", kind
        assert prov["device_map"] is None, kind
        assert prov["backend"] == ("transformer-lens" if kind == "bridge" else "hf"), kind
        assert "accelerate" in prov["versions"]
        text = repr(lm)
        assert "placement   inputs go to cpu" in text, kind
    assert "blocks 0-1     cpu, float32" in repr(models["vim"])


def test_cli_run_without_notebook_passes_and_records_the_choices(scratch_models, tmp_path):
    out = tmp_path / "run"
    model = str(scratch_models["bert"])
    args = ["run", "atlas", "--model", model, "--out", str(out), "--no-notebook", *QUICK]
    result = cli.invoke(app, [*args, "--device", "cpu", "--dtype", "bfloat16", "--backend", "hf"])
    assert result.exit_code == 0, result.output
    prov = json.loads((out / "result.json").read_text())["provenance"]
    assert (prov["device"], prov["dtype"], prov["backend"]) == ("cpu", "bfloat16", "hf")


@pytest.mark.slow
def test_cli_notebook_run_gets_the_choices_through_its_load_parameter(scratch_models, tmp_path):
    out = tmp_path / "nb"
    model = str(scratch_models["bert"])
    args = ["run", "atlas", "--model", model, "--out", str(out), *QUICK]
    result = cli.invoke(app, [*args, "--device", "cpu", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    prov = json.loads((out / "result.json").read_text())["provenance"]
    assert (prov["device"], prov["dtype"]) == ("cpu", "float32")
    nb = json.loads((out / "atlas.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert '"device": "cpu"' in "".join(injected[0]["source"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cuda:0"], "not available here"),
        (["--dtype", "fp8"], "unknown dtype"),
        (["--backend", "transformer-lens"], "wraps causal LMs"),
        (["--device-map", "{not json"], "not a JSON object"),
        (["--device-map", "auto", "--max-memory", "cpu"], "DEVICE=SIZE"),
        (["--max-memory", "cpu=1GiB"], "add device_map='auto'"),
    ],
)
def test_cli_refuses_bad_choices_before_work(scratch_models, tmp_path, extra, message):
    out = tmp_path / "run"
    args = ["run", "atlas", "--model", str(scratch_models["vit"]), "--out", str(out), *extra]
    result = cli.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_unknown_load_option_is_refused(scratch_models, tmp_path):
    from workbench.runner import plan_run

    with pytest.raises(WorkbenchError, match="unknown loading option"):
        plan_run("atlas", str(scratch_models["vit"]), out=tmp_path / "x", load={"devise": "cpu"})


def test_capture_kept_on_the_device_equals_the_host_copy_and_still_spills(scratch_models):
    lm = load_model(scratch_models["gpt2"], device="cpu")
    sites = lm.layer_sites("resid_post")
    host = capture(lm, _texts(), sites, progress=False)
    kept = capture(lm, _texts(), sites, keep_on_device=True, progress=False)
    spilled = capture(lm, _texts(), sites, keep_on_device=True, memory_budget=0, progress=False)
    assert kept.spill_dir is None and spilled.spill_dir is not None
    for site in sites:
        assert kept[site].device == lm.device
        assert torch.equal(kept[site], host[site]) and torch.equal(spilled[site], host[site])
    spilled.close()


def test_a_mismatched_checkpoint_is_one_line_with_the_full_list_kept(scratch_models, capfd):
    import transformers as tf

    folder = scratch_models["bert"].parent / "bert-mlm"
    if not folder.exists():
        import shutil

        shutil.copytree(scratch_models["bert"], folder)
        torch.manual_seed(0)
        tf.BertForMaskedLM(tf.BertConfig.from_pretrained(folder)).save_pretrained(folder)
    capfd.readouterr()
    lm = load_model(folder)
    err = capfd.readouterr().err
    words = ("unused", "initialised", "LOAD REPORT", "UNEXPECTED", "MISSING")
    lines = [line for line in err.splitlines() if any(w in line for w in words)]
    assert len(lines) == 1 and "unused" in lines[0] and "newly initialised" in lines[0], err
    assert "model.load_report" in lines[0]
    assert "cls.predictions.transform.dense.weight" in lm.load_report["unused"]
    assert set(lm.load_report["initialised"]) == {"pooler.dense.weight", "pooler.dense.bias"}
    capfd.readouterr()
    assert load_model(scratch_models["bert"]).load_report == {"unused": (), "initialised": ()}
    assert "unused" not in capfd.readouterr().err


# -- precision ----------------------------------------------------------------------------------
def test_bfloat16_load_gives_bfloat16_captures_close_to_float32_and_spills_exactly(
    scratch_models, tmp_path
):
    full = load_model(scratch_models["gpt2"], dtype="float32")
    half = load_model(scratch_models["gpt2"], dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and half.placement()["dtype"] == "bfloat16"
    sites = half.layer_sites("resid_post")
    ram = capture(half, _texts(), sites, progress=False)
    disk = capture(half, _texts(), sites, memory_budget=0, spill_dir=tmp_path, progress=False)
    wide = capture(half, _texts(), sites, dtype=torch.float32, progress=False)
    reference = capture(full, _texts(), sites, progress=False)
    assert disk.spill_dir == tmp_path
    for site in sites:
        assert ram[site].dtype == disk[site].dtype == torch.bfloat16
        assert torch.equal(ram[site].view(torch.int16), disk[site].view(torch.int16))
        assert wide[site].dtype == torch.float32 and torch.equal(wide[site], ram[site].float())
        scale = reference[site].abs().max()
        assert (ram[site].float() - reference[site]).abs().max() < 0.05 * scale
        assert not torch.equal(ram[site].float(), reference[site])  # it really ran in bf16


@pytest.mark.slow
def test_probe_results_in_bfloat16_stay_within_tolerance_of_float32():
    """Atlas on zoo:vit-scenes: the decodability curve moves by at most 3 points in bfloat16
    (the probe upcasts captures to float32 before its scikit-learn fits)."""
    from probes import atlas

    config = make_config("atlas", preset="quick")
    runs = {d: atlas.run(load_model("zoo:vit-scenes", dtype=d), config) for d in DTYPES}
    assert runs["bfloat16"].provenance["dtype"] == "bfloat16"
    full, half = runs["float32"].arrays["accuracy"], runs["bfloat16"].arrays["accuracy"]
    assert np.abs(full - half).max() <= 0.03
    assert (
        abs(runs["float32"].metrics["peak_accuracy"] - runs["bfloat16"].metrics["peak_accuracy"])
        <= 0.03
    )
    assert full.max() - full.min() > 0.1  # the curve rises well beyond the tolerance


DTYPES = ("float32", "bfloat16")
