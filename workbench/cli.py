"""The ``workbench`` command: list, run, demo, trajectory, sweep, report, export, compare, zoo,
store, factors.

Bad input and a failing disk end a command with one line ``error: ...`` and exit code 2, never
a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import WorkbenchError, one_line

app = typer.Typer(
    help="Interpretability workbench: run probes headlessly and build reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Embedded default models.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
store_app = typer.Typer(help="Activation stores: extract once, probe many.", no_args_is_help=True)
app.add_typer(store_app, name="store")
factors_app = typer.Typer(
    help="K-FAC factors: collect once (data-parallel under torchrun), reuse in curvature runs.",
    no_args_is_help=True,
)
app.add_typer(factors_app, name="factors")


def _describe(err: Exception) -> str:
    """One line for a WorkbenchError, or for an OSError (a full disk, a vanished folder)."""
    if isinstance(err, OSError):
        return f"{one_line(err)} (check the path, its permissions and the free disk space)"
    return " ".join(str(err).split())


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except (WorkbenchError, OSError) as err:
        typer.secho(f"error: {_describe(err)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command("list")
def list_cmd() -> None:
    """Probes (with accepted families, presets, default models) and zoo models."""
    from workbench.probe import get_probe, presets_of, probe_names
    from workbench.zoo import list_zoo, zoo_state

    typer.echo("probes:")
    for name in probe_names():
        module = get_probe(name)
        doc = (module.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"  {name:<10} {doc}")
        typer.echo(
            f"  {'':<10} families: {', '.join(module.FAMILIES)}; "
            f"presets: {', '.join(presets_of(name)) or '-'}; "
            f"defaults: {', '.join(module.DEFAULT_MODELS)}"
        )
    typer.echo("zoo models (use as --model zoo:NAME):")
    entries = list_zoo()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        state = zoo_state(entry.name)
        typer.echo(f"  {entry.name:<{width}} {entry.family:<10} {state:<10} {entry.description}")


@app.command()
def run(
    probe: Annotated[str, typer.Argument(help="probe name, see `workbench list`")],
    out: Annotated[Path, typer.Option("--out", help="folder for this run's results")],
    model: Annotated[str | None, typer.Option(help="hub id, local folder or zoo:NAME")] = None,
    param: Annotated[list[str] | None, typer.Option(help="config value, key=value")] = None,
    preset: Annotated[str | None, typer.Option(help="named preset of the probe")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run in --out")] = False,
    notebook: Annotated[bool, typer.Option(help="run notebooks/PROBE.ipynb via papermill")] = True,
    device: Annotated[
        str | None, typer.Option(help="auto (default), cpu, cuda, cuda:N or mps")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto (default), float32, bfloat16 or float16")
    ] = None,
    device_map: Annotated[
        str | None,
        typer.Option(help='auto, or JSON {"module": device|"cpu"|"disk"}: split and offload'),
    ] = None,
    max_memory: Annotated[
        list[str] | None,
        typer.Option(help="with --device-map: room per device, e.g. cpu=8GiB or 0=20GiB"),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="hf (default) or transformer-lens")] = None,
) -> None:
    """Run one probe headlessly and write result.json, figures and the executed notebook."""
    from workbench.probe import parse_params
    from workbench.runner import execute, plan_run

    with _one_line_errors():
        plan = plan_run(
            probe,
            model,
            out=out,
            params=parse_params(param or []),
            preset=preset,
            overwrite=overwrite,
            load={
                "device": device,
                "dtype": dtype,
                "device_map": _parse_device_map(device_map),
                "max_memory": _parse_sizes(max_memory),
                "backend": backend,
            },
        )
        started = time.time()
        folder = execute(plan, notebook=notebook)
    typer.echo(f"{probe} on {plan.model}: {folder} ({time.time() - started:.0f} s)")


def _parse_device_map(value: str | None) -> str | dict | None:
    """``auto`` as it is; a JSON object into a dict."""
    if value is None or not value.strip().startswith("{"):
        return value
    try:
        parsed = json.loads(value)
    except ValueError as err:
        raise WorkbenchError(
            f"--device-map {value!r} is not a JSON object ({one_line(err)}); give auto or "
            '\'{"transformer.h.0": "cpu", "transformer.h.1": "disk", ...}\''
        ) from None
    return parsed


def _parse_sizes(values: list[str] | None) -> dict[str, str] | None:
    """``["cpu=8GiB", "0=20GiB"]`` -> ``{"cpu": "8GiB", "0": "20GiB"}``."""
    if not values:
        return None
    sizes = {}
    for item in values:
        where, sep, size = item.partition("=")
        if not sep or not where.strip() or not size.strip():
            raise WorkbenchError(f"--max-memory {item!r} must be DEVICE=SIZE, e.g. cpu=8GiB")
        sizes[where.strip()] = size.strip()
    return sizes


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    probe: Annotated[list[str] | None, typer.Option(help="only these probes")] = None,
    notebook: Annotated[bool, typer.Option(help="run each probe's notebook")] = True,
    workers: Annotated[
        int | None, typer.Option(help="runs at once (default: one per core)", min=1)
    ] = None,
) -> None:
    """Every probe on each of its embedded default models, in parallel, then the report
    (replaces old runs)."""
    from workbench.probe import get_probe, probe_names
    from workbench.report import build_report
    from workbench.runner import result_folder_name
    from workbench.sweep import Point, Sweep, run_sweep, summary_table

    with _one_line_errors():
        points = tuple(
            Point(name, spec, name=result_folder_name(name, spec))
            for name in probe or probe_names()
            for spec in get_probe(name).DEFAULT_MODELS
        )
        started = time.time()
        record = run_sweep(Sweep(points, notebook=notebook), out, workers=workers, rerun=True)
        typer.echo(summary_table(record))
        typer.echo(f"{len(points)} runs in {time.time() - started:.0f} s")
        index = build_report(out)
    typer.echo(f"report: {index}")
    failed = [p for p in record.points if p.state == "failed"]
    if failed:
        typer.secho(f"{len(failed)} run(s) failed", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def trajectory(
    model: Annotated[str, typer.Option(help="zoo:NAME built with --checkpoints, or a hub id")],
    out: Annotated[Path, typer.Option(help="folder for trajectory.json and the figures")],
    revision: Annotated[
        list[str] | None, typer.Option(help="hub checkpoints by revision (step1000 ...)")
    ] = None,
    step: Annotated[list[int] | None, typer.Option(help="only these steps")] = None,
    measure: Annotated[
        list[str] | None, typer.Option(help="atlas, binding, recitation (default: all that fit)")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="atlas.KEY=VALUE or binding.KEY=VALUE")
    ] = None,
) -> None:
    """Measure every checkpoint of a training run (after refusing duplicated checkpoints):
    decodability per layer, binding vs its controls, canary recitation and perplexity."""
    from workbench.probe import parse_params
    from workbench.trajectory import MEASURES, run_trajectory

    with _one_line_errors():
        params: dict[str, dict[str, str]] = {"atlas": {}, "binding": {}}
        for key, value in parse_params(param or []).items():
            probe, _, name = key.partition(".")
            if probe not in params or not name:
                raise WorkbenchError(
                    f"--param {key}=...: write atlas.KEY=VALUE or binding.KEY=VALUE"
                )
            params[probe][name] = value
        started = time.time()
        result = run_trajectory(
            model,
            revisions=revision or (),
            steps=step or (),
            measures=measure or MEASURES,
            atlas_params=params["atlas"],
            binding_params=params["binding"],
        )
        folder = result.save(out)
    typer.echo(
        f"trajectory of {model} over steps {result.steps}: {folder} ({time.time() - started:.0f} s)"
    )


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="the sweep's YAML file")],
    out: Annotated[Path, typer.Option(help="folder for the sweep: one run folder per point")],
    executor: Annotated[str, typer.Option(help="local (a process pool) or ray")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (with --executor ray)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="local pool: runs at once (default: one per core)", min=1)
    ] = None,
    rerun: Annotated[bool, typer.Option(help="run finished points again")] = False,
) -> None:
    """Run a grid or list of runs from SWEEP_FILE; finished points are skipped, failed ones
    retried once; writes OUT/sweep.json and prints a summary."""
    from workbench.sweep import counts, load_sweep, run_sweep, summary_table

    with _one_line_errors():
        record = run_sweep(
            load_sweep(sweep_file),
            out,
            executor=executor,
            address=address,
            workers=workers,
            rerun=rerun,
        )
    typer.echo(summary_table(record))
    tally = ", ".join(f"{n} {state}" for state, n in counts(record).items())
    typer.echo(f"{len(record.points)} points: {tally}; {out / 'sweep.json'}")
    if "failed" in counts(record):
        raise typer.Exit(1)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="folder holding result folders")] = Path(
        "results"
    ),
    open_: Annotated[
        bool, typer.Option("--open", help="open the report's summary page in a browser")
    ] = False,
) -> None:
    """Build an offline report of every result under RESULTS: index.html (a summary) and one
    page per probe."""
    from workbench.report import build_report

    with _one_line_errors():
        index = build_report(results)
    typer.echo(index)
    if open_:
        import webbrowser

        if not webbrowser.open(index.resolve().as_uri()):
            typer.echo("no browser could be started; open the path above yourself", err=True)


@app.command()
def export(
    result: Annotated[Path, typer.Argument(help="a result folder (holds result.json)")],
    out: Annotated[Path, typer.Option(help="folder to write the figure files into")],
    figure: Annotated[list[str] | None, typer.Option(help="only these figures")] = None,
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="html, png, svg or pdf (repeatable)")
    ] = None,
) -> None:
    """Export a saved result's figures (HTML, PNG, SVG by default) into OUT."""
    from workbench.figures import DEFAULT_FORMATS, export_figures
    from workbench.results import ProbeResult

    with _one_line_errors():
        loaded = ProbeResult.load(result)
        names = figure or list(loaded.figures)
        unknown = [n for n in names if n not in loaded.figures]
        if unknown:
            raise WorkbenchError(
                f"{result} has no figure {', '.join(unknown)}; it has {', '.join(loaded.figures)}"
            )
        written = export_figures(
            {n: loaded.figures[n] for n in names}, out, tuple(fmt or DEFAULT_FORMATS)
        )
    for paths in written.values():
        for path in paths:
            if path.suffix != ".json":
                typer.echo(str(path))


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="result folders or sweep folders")],
    out: Annotated[Path, typer.Option(help="folder to write the comparison figures into")],
    probe: Annotated[
        str | None, typer.Option(help="only this probe's runs (for sweeps over several)")
    ] = None,
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="html, png, svg or pdf (repeatable)")
    ] = None,
) -> None:
    """Draw several runs of one probe on shared axes, from the metrics it declares comparable."""
    from workbench.compare import compare_figures, load_runs
    from workbench.figures import DEFAULT_FORMATS, export_figures

    with _one_line_errors():
        figures = compare_figures(load_runs(runs, probe))
        written = export_figures(figures, out, tuple(fmt or DEFAULT_FORMATS))
    for paths in written.values():
        for path in paths:
            if path.suffix != ".json":
                typer.echo(str(path))


@zoo_app.command("list")
def zoo_list() -> None:
    """Embedded models, their family, and whether they are built."""
    from workbench.zoo import ZooChecksumError, list_zoo, zoo_path

    entries = list_zoo()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        try:
            where = str(zoo_path(entry.name))
        except ZooChecksumError:
            where = f"corrupt (rebuild: workbench zoo build {entry.name})"
        except WorkbenchError:
            where = f"not built (workbench zoo build {entry.name})"
        typer.echo(f"{entry.name:<{width}} {entry.family:<10} seed {entry.seed:<4} {where}")


@zoo_app.command("build")
def zoo_build(
    name: Annotated[str, typer.Argument(help="zoo model to (re)build from its recipe")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="folder (default: data/zoo/NAME; with --checkpoints "
            "~/.cache/workbench/zoo-checkpoints/NAME or $WORKBENCH_CHECKPOINT_DIR/NAME)"
        ),
    ] = None,
    checkpoints: Annotated[
        int,
        typer.Option(
            help="also keep the weights at this many log-spaced training steps (step 0 and the "
            "last included), loaded as zoo:NAME@STEP"
        ),
    ] = 0,
) -> None:
    """Rebuild a zoo model from its recipe and seed."""
    from workbench.zoo import build

    with _one_line_errors():
        metrics = build(name, out, checkpoints=checkpoints)
    for key, value in metrics.items():
        typer.echo(f"  {key}: {value}")


@store_app.command("build")
def store_build(
    model: Annotated[str, typer.Option(help="hub id, local folder or zoo:NAME")],
    out: Annotated[Path, typer.Option(help="the store folder (created, resumed or appended to)")],
    sites: Annotated[
        str,
        typer.Option(
            help="comma-separated site names, kinds (resid_post = every block's) or patterns "
            "(blocks.*.attn.W_Q.input)"
        ),
    ] = "blocks.0.resid_pre,resid_post",
    data: Annotated[str, typer.Option(help="scenes, imagefolder, ade20k or coco")] = "scenes",
    data_path: Annotated[str, typer.Option(help="your data folder (not for scenes)")] = "",
    annotations: Annotated[str, typer.Option(help="COCO: the instances_*.json file")] = "",
    split: Annotated[str, typer.Option(help="ADE20K: training or validation")] = "validation",
    n: Annotated[int, typer.Option(help="images to store (the first n)")] = 160,
    seed: Annotated[int, typer.Option(help="seed of the synthetic scenes")] = 0,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 32,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16")] = "float32",
) -> None:
    """Run a vision model over a dataset once and keep chosen sites on disk (resumable)."""
    import torch

    from workbench.data.images import describe_images, load_images
    from workbench.models import load_model
    from workbench.store import build_store, resolve_sites

    with _one_line_errors():
        if dtype not in ("float32", "float16", "bfloat16"):
            raise WorkbenchError(f"--dtype must be float32, float16 or bfloat16, not {dtype!r}")
        if n < 1 or batch_size < 1:
            raise WorkbenchError("--n and --batch-size must be at least 1")
        lm = load_model(model)
        names = resolve_sites(lm, sites)
        images = load_images(
            lm, data, path=data_path, annotations=annotations, split=split, n=n, seed=seed
        )
        name, preprocessing = describe_images(
            lm, data, path=data_path, annotations=annotations, seed=seed
        )
        store = build_store(
            lm,
            images.images,
            names,
            out,
            dataset=name,
            preprocessing=preprocessing,
            batch_size=batch_size,
            dtype=getattr(torch, dtype),
        )
    what = "reused as it was" if store.reused else f"{store.computed_rows} rows computed"
    typer.echo(f"{out}: {store.n_rows} rows x {len(store.sites)} sites ({what})")


@store_app.command("info")
def store_info(
    folder: Annotated[Path, typer.Argument(help="a store folder")],
) -> None:
    """What a store holds: model, dataset, token layout, preprocessing, sites and shapes."""
    from workbench.store import open_store

    with _one_line_errors():
        typer.echo(open_store(folder).describe())


@factors_app.command("collect")
def factors_collect(
    model: Annotated[str, typer.Option(help="hub id, local folder or zoo:NAME")],
    out: Annotated[Path, typer.Option(help="the factors file, NAME.safetensors")],
    corpus: Annotated[
        str,
        typer.Option(help="text file, JSONL, folder or saved dataset; empty: the probe's default"),
    ] = "",
    tokens: Annotated[
        int | None, typer.Option(help="token budget of the corpus (factor_tokens)")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="curvature setting, key=value (weights, seq_len, labels, ...)"),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="curvature preset")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Collect the curvature probe's K-FAC factors into a file (use: --param factors=FILE).

    Under `torchrun --nproc-per-node N -m workbench.cli factors collect ...` each process reads
    its share of the corpus and the sums are all-reduced once at the end.
    """
    from probes.curvature.probe import collect_factors_file
    from workbench.probe import parse_params

    params: dict[str, object] = dict(parse_params(param or []))
    if corpus:
        params["factor_corpus"] = corpus
    if tokens is not None:
        params["factor_tokens"] = tokens
    with _one_line_errors():
        started = time.time()
        factors = collect_factors_file(
            model,
            out,
            params=params,
            preset=preset,
            device=device,
            dtype=dtype,
            overwrite=overwrite,
        )
    if os.environ.get("RANK", "0") == "0":  # one line per job, not per process
        typer.echo(
            f"{out}: {len(factors.names)} weights over {factors.n_positions} positions, "
            f"{factors.extra.get('processes', 1)} process(es) ({time.time() - started:.0f} s)"
        )


def main() -> None:  # pragma: no cover - console entry for `python -m workbench.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
