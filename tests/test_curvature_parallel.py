"""K-FAC factors across processes: two CPU processes under torchrun (gloo) give the factors and
the edited weights of one process, and a factors file is used by the probe only on its model."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probes import curvature
from probes.curvature import compute
from probes.curvature import probe as curvature_probe
from probes.curvature.factors import KFACFactors, collect_factors, factor_sums, read_provenance
from workbench.data.canaries import VOCABULARY
from workbench.data.corpus import TokenBatches
from workbench.errors import DataError, OutputExistsError
from workbench.models import load_model
from workbench.models.scratch import save_random_model
from workbench.threads import torch_threads

WORDS = list(VOCABULARY)
"""The canary corpus's words: the probe's defaults (canaries, held-out text) fit the model."""
ROOT = Path(__file__).resolve().parents[1]
RELATIVE = 1e-6


def _relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.norm(x.double() - ref.double()) / torch.linalg.norm(ref.double()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-block GPT-2 of the canary vocabulary and a corpus of its words (60 documents)."""
    root = tmp_path_factory.mktemp("parallel")
    folder = save_random_model(root / "gpt2", "gpt2", n_positions=64, words=WORDS)
    rng = random.Random(0)
    corpus = root / "corpus.jsonl"
    with corpus.open("w") as f:
        for _ in range(60):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 90)))
            f.write(f'{{"text": "{text}"}}\n')
    return folder, corpus


def _cli(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "workbench.cli", *args]
    else:
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            f"--nproc-per-node={processes}",
            *("-m", "workbench.cli", *args),
        ]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _collect(folder: Path, corpus: Path, out: Path, processes: int) -> KFACFactors:
    done = _cli(
        *("factors", "collect", "--model", str(folder), "--corpus", str(corpus)),
        *("--out", str(out), "--tokens", "1600", "--param", "seq_len=32"),
        *("--param", "batch_size=4", "--param", r"weights=mlp\.W_", "--param", "threads=1"),
        processes=processes,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(str(out)) == 1, done.stdout  # one line for the job
    return KFACFactors.load(out)


@pytest.mark.slow
def test_two_processes_give_the_factors_and_edits_of_one(tiny, tmp_path):
    folder, corpus = tiny
    one = _collect(folder, corpus, tmp_path / "one.safetensors", processes=1)
    two = _collect(folder, corpus, tmp_path / "two.safetensors", processes=2)
    assert one.extra["processes"] == 1 and two.extra["processes"] == 2
    assert one.n_positions == two.n_positions == 50 * 31  # 50 sequences of 32 tokens
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "one.json",
        "one.safetensors",
        "two.json",
        "two.safetensors",
    ]  # nothing half-written left behind
    lm = load_model(folder)
    assert read_provenance(tmp_path / "two.safetensors")["model_digest"] == lm.digest()
    assert two.extra["corpus"] == str(corpus) and two.extra["factor_tokens"] == 1600
    bases_one, bases_two = one.eigenbases(progress=False), two.eigenbases(progress=False)
    for name in one.names:
        assert _relative(two.a[name], one.a[name]) < RELATIVE, name
        assert _relative(two.g[name], one.g[name]) < RELATIVE, name
        weight = lm.weight(name).detach()
        edited_one = compute.kfac_weight(weight, bases_one[name], 0.9)
        edited_two = compute.kfac_weight(weight, bases_two[name], 0.9)
        assert _relative(edited_two, edited_one) < RELATIVE, name
        assert _relative(edited_one, weight) > 1e-3  # the edit changed something

    other = save_random_model(tmp_path / "other", "gpt2", n_positions=64, words=WORDS, seed=1)
    refused = _cli(
        *("run", "curvature", "--model", str(other), "--out", str(tmp_path / "run")),
        *("--param", f"factors={tmp_path / 'two.safetensors'}", "--no-notebook"),
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    error = refused.stderr.strip().splitlines()[-1]  # one line, after any loading output
    assert error.startswith("error: ") and "holds factors of" in error, refused.stderr[-2000:]
    assert "collect them on this model" in error
    assert not (tmp_path / "run").exists()


def test_sampled_labels_do_not_depend_on_batching_or_sharding(tiny):
    """What makes shards add up to one collection: each sequence draws its own labels."""
    folder, corpus = tiny
    lm = load_model(folder)
    names = lm.weight_names(r"mlp\.W_in")

    def stream(batch_size: int, shard: tuple[int, int] = (0, 1)) -> TokenBatches:
        return TokenBatches(
            lambda: (line for line in corpus.read_text().splitlines()),
            lm.processor,
            seq_len=16,
            max_tokens=16 * 12,
            batch_size=batch_size,
            shard=shard,
        )

    with torch_threads(1):
        whole = collect_factors(lm, stream(4), names, progress=False)
        rebatched = collect_factors(lm, stream(5), names, progress=False)
        other_seed = collect_factors(lm, stream(4), names, seed=1, progress=False)
        parts = [factor_sums(lm, stream(3, (r, 3)), names, progress=False) for r in range(3)]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    a, g = merged.factors()
    assert merged.count == whole.n_positions == 12 * 15
    for name in names:
        assert _relative(rebatched.g[name], whole.g[name]) < RELATIVE
        assert _relative(g[name], whole.g[name]) < RELATIVE
        assert _relative(a[name], whole.a[name]) < RELATIVE
        assert _relative(other_seed.g[name], whole.g[name]) > 1e-3  # the labels are sampled
    with pytest.raises(DataError, match="rank < world"):
        stream(4, (3, 3))


def test_factors_file_is_used_on_its_model_and_refused_on_another(tiny, tmp_path, monkeypatch):
    folder, corpus = tiny
    lm = load_model(folder)
    config = curvature.Config(
        factor_corpus=str(corpus),
        factor_tokens=1024,
        held_out_tokens=1024,
        sweep=(0.9,),
        svd_sweep=(0.9,),
        match_svd=False,
        threads=1,
    )
    path = tmp_path / "f.safetensors"
    curvature_probe.factors_for(lm, config).save(path)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        curvature_probe.collect_factors_file(str(folder), path)
    with pytest.raises(DataError, match=r"\.safetensors"):
        curvature_probe.collect_factors_file(str(folder), tmp_path / "f.pt")

    def no_collection(*args, **kwargs):
        raise AssertionError("the factors were collected although a file was given")

    monkeypatch.setattr(curvature_probe, "collect_factors", no_collection)
    from_file = dataclasses.replace(config, factors=str(path))
    result = curvature.run(lm, from_file)
    assert result.metrics["factor_positions"] == 16 * 63

    other = load_model(
        save_random_model(tmp_path / "other", "gpt2", n_positions=64, words=WORDS, seed=1)
    )
    with pytest.raises(DataError, match=r"holds factors of .* not of .*collect them on this"):
        curvature.run(other, from_file)
    with pytest.raises(DataError, match="does not exist"):
        curvature.run(lm, dataclasses.replace(config, factors=str(tmp_path / "none.safetensors")))
    (tmp_path / "bad.safetensors").write_text("not a factors file")
    with pytest.raises(DataError, match="not a readable factors file"):
        curvature.run(lm, dataclasses.replace(config, factors=str(tmp_path / "bad.safetensors")))
