"""The ``workbench`` command: list, run, demo, report, export, compare, zoo.

Bad input and a failing disk end a command with one line ``error: ...`` and exit code 2, never
a traceback.
"""

from __future__ import annotations

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
        )
        started = time.time()
        folder = execute(plan, notebook=notebook)
    typer.echo(f"{probe} on {plan.model}: {folder} ({time.time() - started:.0f} s)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    probe: Annotated[list[str] | None, typer.Option(help="only these probes")] = None,
    notebook: Annotated[bool, typer.Option(help="run each probe's notebook")] = True,
) -> None:
    """Every probe on each of its embedded default models, then the report (replaces old runs)."""
    from workbench.probe import get_probe, probe_names
    from workbench.report import build_report
    from workbench.runner import execute, plan_run, result_folder_name

    failures = []
    with _one_line_errors():
        for name in probe or probe_names():
            for spec in get_probe(name).DEFAULT_MODELS:
                folder = out / result_folder_name(name, spec)
                started = time.time()
                typer.echo(f"== {name} on {spec} -> {folder}")
                try:
                    execute(plan_run(name, spec, out=folder, overwrite=True), notebook=notebook)
                except (WorkbenchError, OSError) as err:
                    failures.append(f"{name} on {spec}: {_describe(err)}")
                    typer.secho(f"   failed: {_describe(err)}", fg=typer.colors.RED, err=True)
                    continue
                typer.echo(f"   done in {time.time() - started:.0f} s")
        index = build_report(out)
    typer.echo(f"report: {index}")
    if failures:
        typer.secho(f"{len(failures)} run(s) failed", fg=typer.colors.RED, err=True)
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
    runs: Annotated[list[Path], typer.Argument(help="result folders of one probe")],
    out: Annotated[Path, typer.Option(help="folder to write the comparison figures into")],
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="html, png, svg or pdf (repeatable)")
    ] = None,
) -> None:
    """Draw several runs of one probe on shared axes, from the metrics it declares comparable."""
    from workbench.compare import compare_figures, load_runs
    from workbench.figures import DEFAULT_FORMATS, export_figures

    with _one_line_errors():
        figures = compare_figures(load_runs(runs))
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
    out: Annotated[Path | None, typer.Option(help="folder (default: data/zoo/NAME)")] = None,
) -> None:
    """Rebuild a zoo model from its recipe and seed."""
    from workbench.zoo import build

    with _one_line_errors():
        metrics = build(name, out)
    for key, value in metrics.items():
        typer.echo(f"  {key}: {value}")


def main() -> None:  # pragma: no cover - console entry for `python -m workbench.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
