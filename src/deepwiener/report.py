"""What the command line shows about a model or a run: the analysis of a model, text tables, one HTML page.

* :func:`inspect_model` gathers the analysis of a model (each block's LTI part, its nonlinearity on data, the
  delta-ISS certificate) into an :class:`Inspection`, which draws its figures and converts to JSON.
* :data:`METRICS_HEADER` / :func:`metrics_rows`, :data:`BLOCKS_HEADER` / :func:`block_rows` and
  :func:`reduction_rows` build the rows of the tables that the command line prints and the HTML page shows.
* :func:`reduction_summary` is the content of a reduced run's ``reduction.json``.
* :func:`render_report` writes one self-contained HTML page about a run: figures embedded as base64 PNG data
  URIs, no external resources, every text escaped.

Like ``plots``, only the command line imports this module, so ``import deepwiener`` does not load matplotlib.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from deepwiener import analysis, analysis_plots, plots
from deepwiener.analysis import (
    BlockSystem,
    Certificate,
    LoopCertificate,
    NonlinearityCurve,
    NonLTIBlock,
    ReductionResult,
)
from deepwiener.data import Benchmark
from deepwiener.errors import ConfigError
from deepwiener.evaluation import Metrics
from deepwiener.io import load, versions
from deepwiener.models import FILE_KINDS, Model
from deepwiener.runs import RunDir
from deepwiener.training import FineTuneResult

SECTIONS: dict[str, str] = {
    "metrics": "Metrics per test set",
    "training": "Training curves",
    "simulation": "Simulated vs measured output",
    "analysis": "Analysis of the blocks",
    "certificate": "Stability certificate",
    "config": "Resolved configuration",
}
"""The sections of every report page: ``<section id=KEY>`` with the title as its heading."""
IN_SAMPLE_TITLE = "Fit on the training data (in-sample: no held-out test records)"
"""The metrics section's title when the run's test records are its training records (a CSV run without tests)."""

ANALYSIS_FIGURES: dict[str, str] = {
    "pole_zero": "Pole-zero maps",
    "bode": "Bode diagram",
    "hsv": "Hankel singular values",
    "nonlinearity": "Nonlinearity curves",
}
"""The sub-sections of the analysis section, keyed by the prefix of the figure names they show."""

METRICS_HEADER = ("test", "samples", "RMSE", "unit", "NRMSE", "FIT [%]", "R²")
BLOCKS_HEADER = ("block", "layer", "real states", "spectral radius", "stable", "H∞ norm", "H∞ peak [Hz]", "‖G(1)‖",
                 "certificate")
REDUCTION_BLOCKS_HEADER = ("block", "modes before", "modes after", "H∞ error bound")
REDUCTION_TESTS_HEADER = ("test", "RMSE before", "RMSE after", "unit", "FIT before [%]", "FIT after [%]")


@dataclass(frozen=True, eq=False)
class Inspection:
    """The analysis of one model.

    Attributes:
        config: the model's configuration (``ModelConfig.to_dict()``).
        blocks: the linear part of every block (``analysis.blocks``).
        certificate: the delta-ISS certificate (with local constants from the data, when given; an LFR model's
            is the contraction condition of its loop).
        curves: each block's nonlinearity over the range seen on the data; None without data.
        data: name of the record the curves and local constants come from; None without data.
    """

    config: dict[str, Any]
    blocks: list[BlockSystem | NonLTIBlock]
    certificate: Certificate | LoopCertificate
    curves: list[NonlinearityCurve] | None
    data: str | None

    def figures(self) -> dict[str, Figure]:
        """The figures by file stem: ``pole_zero_block{i}`` per LTI block, ``bode`` and ``hsv`` when there is an
        LTI (stable) block, ``nonlinearity`` with data."""
        systems = [b for b in self.blocks if isinstance(b, BlockSystem)]
        figures = {f"pole_zero_block{b.index}": analysis_plots.pole_zero_figure(b) for b in systems}
        if systems:
            figures["bode"] = analysis_plots.bode_figure(self.blocks)
        if any(b.is_stable for b in systems):
            figures["hsv"] = analysis_plots.hsv_figure(self.blocks)
        if self.curves is not None:
            figures["nonlinearity"] = analysis_plots.nonlinearity_figure(self.curves)
        return figures

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: the model config, the data's name, ``BlockSystem.to_dict()`` per block (poles
        and zeros as [re, im] pairs, dc_gain, hsv, stable, ...) and ``Certificate.to_dict()``."""
        return {"model": self.config, "data": self.data, "blocks": [b.to_dict() for b in self.blocks],
                "certificate": self.certificate.to_dict()}


def inspect_model(model: Model, data: Benchmark | None = None) -> Inspection:
    """Analyse a model: its blocks, and with data its nonlinearity curves and local Lipschitz constants.

    Args:
        model: the model.
        data: the data whose first training record gives the ranges of each nonlinearity's input (the
            range seen in training); None analyses the model alone (no nonlinearity curves).

    Returns:
        The :class:`Inspection`.

    Raises:
        DataError: the record's ``dt`` or input width differs from the model's.
    """
    record = data.train[0] if data is not None else None
    certificate = analysis.certificate(model, record)
    per_block = isinstance(certificate, Certificate)  # an LFR's map mixes its channels: no curve per channel
    return Inspection(
        config=model.config.to_dict(),
        blocks=analysis.blocks(model),
        certificate=certificate,
        curves=analysis.nonlinearity_curves(model, record) if record is not None and per_block else None,
        data=None if record is None else record.name,
    )


def require_capability(model: Model, capability: str, source: str | Path) -> Model:
    """``model`` itself when its kind has ``capability`` ("blocks" for the analysis, "reduce" for the reduction).

    Raises:
        ConfigError: a kind without it (an lstm, gru or linear model, an ensemble, ...), naming ``source`` and the
            kinds that have it.
    """
    if capability not in model.capabilities:
        having = [kind for kind, cls in FILE_KINDS.items() if capability in cls.capabilities]
        members = " (inspect or reduce each of its members)" if model.trainer is None else ""
        raise ConfigError(f"{source} holds a model of kind {model.kind!r}{members}, which has no blocks to "
                          f"analyse or reduce; the kinds that have: {', '.join(having)}")
    return model


def format_values(value: float | Sequence[float] | None, digits: int) -> str:
    """A number, or a per-output list of numbers, with ``digits`` significant digits ("-" for None)."""
    if value is None:
        return "-"
    values = value if isinstance(value, Sequence) else [value]
    return ", ".join(f"{v:.{digits}g}" for v in values)


def metrics_rows(results: Mapping[str, Metrics]) -> list[tuple[str, ...]]:
    """Rows of :data:`METRICS_HEADER`, one per test set."""
    return [(name, str(m["n_samples"]), format_values(m["rmse"], 5), m["unit"] or "-", format_values(m["nrmse"], 4),
             format_values(m["fit"], 4), format_values(m["r2"], 5)) for name, m in results.items()]


def block_rows(inspection: Inspection) -> list[tuple[str, ...]]:
    """Rows of :data:`BLOCKS_HEADER`, one per block."""
    rows = []
    for system, cert in zip(inspection.blocks, inspection.certificate.blocks, strict=True):
        if isinstance(system, NonLTIBlock):
            rows.append((str(system.index), system.layer, *["-"] * 6, cert.status))
            continue
        hinf, peak = system.hinf_norm() if system.is_stable else (None, None)
        rows.append((str(system.index), system.layer, str(system.n_states), f"{system.spectral_radius:.6f}",
                     "yes" if system.is_stable else "NO", format_values(hinf, 4), format_values(peak, 4),
                     format_values(float(np.linalg.norm(system.dc_gain, 2)), 4), cert.status))
    return rows


def reduction_summary(result: ReductionResult, before: Mapping[str, Metrics], after: Mapping[str, Metrics], *,
                      source: str | Path, order: int | None, tol: float | None) -> dict[str, Any]:
    """The content of a reduced run's ``reduction.json``.

    Args:
        result: the reduction (``analysis.reduce``).
        before: metrics of the original model per test set.
        after: metrics of the reduced model on the same test sets.
        source: the run that was reduced.
        order: the order asked for (complex modes), or None.
        tol: the tolerance asked for, or None.

    Returns:
        ``ReductionResult.to_dict()`` (method, modes before/after per block, H-infinity error bounds) with
        ``rmse_before``/``rmse_after`` and ``fit_before``/``fit_after`` as ``{test: value}`` in ``unit``, plus
        ``source``, ``order`` and ``tol``.
    """
    summary = {"source": str(source), "order": order, "tol": tol, **result.to_dict()}
    for key in ("rmse", "fit"):
        summary[f"{key}_before"] = {name: m[key] for name, m in before.items()}
        summary[f"{key}_after"] = {name: m[key] for name, m in after.items()}
    summary["unit"] = next(iter(before.values()))["unit"] if before else ""
    return summary


def fine_tune_summary(result: FineTuneResult, minutes: float, truncated: Mapping[str, Metrics]) -> dict[str, Any]:
    """The ``fine_tune`` entry of a reduced run's ``reduction.json``.

    Args:
        result: the fine-tuning (``training.fine_tune``).
        minutes: its budget.
        truncated: metrics of the truncated model (before fine-tuning) per test set.

    Returns:
        The budget, the learning rates, epochs run, the best epoch (0: the truncated model was kept), the
        validation RMSE at the start and after, why it stopped, and ``rmse_truncated`` ``{test: value}``.
    """
    return {"minutes": minutes, "lr": result.config.lr, "ssm_lr": result.config.ssm_lr,
            "epochs": result.fit.epochs_run, "best_epoch": result.fit.best_epoch, "seconds": result.fit.seconds,
            "val_rmse_start": result.start_val_rmse, "val_rmse_after": result.fit.best_val_rmse,
            "stopped": result.fit.stopped, "rmse_truncated": {name: m["rmse"] for name, m in truncated.items()}}


def reduction_rows(summary: Mapping[str, Any]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Rows of :data:`REDUCTION_BLOCKS_HEADER` (one per block) and of :data:`REDUCTION_TESTS_HEADER` (one per
    test set) from a :func:`reduction_summary`."""
    blocks = [(str(i), str(b), str(a), format_values(e, 4)) for i, (b, a, e) in
              enumerate(zip(summary["states_before"], summary["states_after"], summary["error_bounds"], strict=True))]
    tests = [(name, format_values(rmse, 5), format_values(summary["rmse_after"][name], 5), summary["unit"] or "-",
              format_values(summary["fit_before"][name], 4), format_values(summary["fit_after"][name], 4))
             for name, rmse in summary["rmse_before"].items()]
    return blocks, tests


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_report(run: RunDir) -> str:
    """One self-contained HTML page about a complete run.

    Sections (:data:`SECTIONS`, plus "reduction" for a reduced run): the metrics per test set (metrics.json),
    the training curves (history.csv), measured vs simulated output on every test set, the analysis of the
    blocks (table, pole-zero maps, Bode diagram, Hankel singular values, nonlinearity curves on the first
    training record), the stability certificate and the resolved configuration (config.toml). The page of a
    baseline run (lstm, gru, linear) says in the analysis and certificate sections that it has no blocks.

    Args:
        run: the run (``RunDir.open``); its data is loaded from its configuration.

    Returns:
        The HTML text; its only images are base64 PNG data URIs and it links to nothing outside itself.

    Raises:
        ConfigError: the run has no valid config.toml.
        DataError: its data cannot be loaded.
        ModelFileError: its model file cannot be read.
    """
    data = run.config().data.load()
    model = load(run.model_path)
    history = run.read_history()
    unit = next(iter(data.tests.values())).y_unit
    inspection = inspect_model(model, data) if "blocks" in model.capabilities else None
    label = model.title or model.kind
    no_blocks = f"<p>Not analysed: a model of kind {_esc(model.kind)} has no blocks.</p>"
    bodies = {
        "metrics": _table(METRICS_HEADER, metrics_rows(json.loads(run.file("metrics.json").read_text("utf-8")))),
        "training": _figure(plots.training_curves(history, unit), "training curves") if history
        else "<p>No training history in this run.</p>",
        "simulation": "".join(f"<h3>{_esc(name)}</h3>" + _figure(
            plots.simulation(test, {label: model.simulate(test.u)}, data.init_window),
            f"measured vs simulated: {name}") for name, test in data.tests.items()),
        "analysis": _analysis_html(inspection) if inspection else no_blocks,
        "certificate": _pre(inspection.certificate.summary()) if inspection else no_blocks,
        "config": _pre(run.file("config.toml").read_text("utf-8").splitlines()),
    }
    titles = {**SECTIONS, "metrics": IN_SAMPLE_TITLE} if data.in_sample else SECTIONS
    sections = {key: (title, bodies[key]) for key, title in titles.items()}
    if run.file("reduction.json").exists():
        summary = json.loads(run.file("reduction.json").read_text(encoding="utf-8"))
        blocks, tests = reduction_rows(summary)
        reduction = (f"<p>Reduced from {_esc(summary['source'])} by {_esc(summary['method'])} truncation; the "
                     "training curves are those of the original model.</p>"
                     + _table(REDUCTION_BLOCKS_HEADER, blocks) + _table(REDUCTION_TESTS_HEADER, tests))
        sections = {"metrics": sections.pop("metrics"), "reduction": ("Model-order reduction", reduction), **sections}
    return _page(run, _describe(model), data, sections)


def _analysis_html(inspection: Inspection) -> str:
    """The block table, then one sub-section per kind of analysis figure (:data:`ANALYSIS_FIGURES`)."""
    figures = inspection.figures()
    parts = [_table(BLOCKS_HEADER, block_rows(inspection))]
    for prefix, title in ANALYSIS_FIGURES.items():
        shown = [_figure(fig, name, small=prefix == "pole_zero") for name, fig in figures.items()
                 if name.startswith(prefix)]
        parts.append(f"<h3>{_esc(title)}</h3>" + ("".join(shown) or "<p>Nothing to show for this model.</p>"))
    return "".join(parts)


def _describe(model: Model) -> str:
    """The model in a few words (its kind and parameters; the configuration section has the rest)."""
    return f"{model.title or model.kind}, {model.n_parameters} parameters"


def _page(run: RunDir, model: str, data: Benchmark, sections: Mapping[str, tuple[str, str]]) -> str:
    """The whole page: head with inline style, title, facts about the run, links to the sections, sections."""
    title = f"deepwiener report: {run.path.name}"
    facts = (f"run {run.path} · data {data.name} · model {model} · deepwiener {versions()['deepwiener']} · "
             f"{time.strftime('%Y-%m-%d %H:%M')}")
    nav = " · ".join(f'<a href="#{key}">{_esc(title)}</a>' for key, (title, _) in sections.items())
    body = "\n".join(f'<section id="{key}">\n<h2>{_esc(title)}</h2>\n{content}</section>'
                     for key, (title, content) in sections.items())
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_esc(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n<p>{_esc(facts)}</p>\n"
            f"<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


_CSS = ("body{font-family:sans-serif;margin:2em auto;max-width:1150px;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1em}th,td{border:1px solid #bbb;padding:3px 8px;"
        "text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}"
        "section{border-top:2px solid #ddd;margin-top:1.5em}figure{margin:0.5em 0}"
        "figure.small{display:inline-block;width:49%;vertical-align:top}")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _pre(lines: Sequence[str]) -> str:
    return "<pre>" + _esc("\n".join(lines)) + "</pre>\n"


def _figure(fig: Figure, alt: str, small: bool = False) -> str:
    """A figure as an embedded PNG; ``small`` ones sit two to a row."""
    css = ' class="small"' if small else ""
    return f'<figure{css}><img alt="{_esc(alt)}" src="{data_uri(plots.png_bytes(fig))}"></figure>\n'

