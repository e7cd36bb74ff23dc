"""The sensitivity panel in a report: how much a result hinges on a hyperparameter chosen before training.

:func:`lossdial.experiments.sensitivity.sensitivity` computes the numbers; this module draws them (one small
table and one figure) and adds them to a ``lossdial report`` page (:func:`add_to_report`).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from lossdial.rundir import fmt_value


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG (the report's dpi) and close it."""
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def _cell(r: dict[str, Any] | None) -> str:
    if not r or r.get("width_mean") is None:
        return "-"
    return f"{fmt_value(r['width_mean'])} ({fmt_value(r['min'])}–{fmt_value(r['max'])})"


def _spread(s: dict[str, Any] | None) -> str:
    return "-" if not s or s.get("std") is None else fmt_value(s["std"])


def _imp(p: dict[str, Any]) -> str:
    imp = p.get("importances")
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(imp.items(), key=lambda kv: -kv[1])) if imp else "-"


def table_rows(panel: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The panel as one small table: per method, what it varies over, per metric the range width (min–max) on
    validation and, where there are seeds, the test std across seeds; then the importances."""
    metrics = panel["metrics"]
    with_seeds = any("seed_spread" in p for p in panel["methods"].values())
    heads = ["method", "across"] + [f"{k} range (val)" for k in metrics]
    heads += [f"{k} seed std (test)" for k in metrics] if with_seeds else []
    heads += ["importances"]
    rows = []
    for p in panel["methods"].values():
        row = [p["label"], f"{p['across']} ({p['points']:.0f})"] + [_cell(p["range"].get(k)) for k in metrics]
        if with_seeds:
            row += [_spread(p.get("seed_spread", {}).get(k)) for k in metrics]
        rows.append(row + [_imp(p)])
    return heads, rows


def markdown(panel: dict[str, Any]) -> str:
    heads, rows = table_rows(panel)
    lines = ["| " + " | ".join(heads) + " |", "|---|---|" + "---:|" * (len(heads) - 3) + "---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def figure(panel: dict[str, Any], path: Path) -> Path | None:
    """One panel per metric: each method's range on validation (a bar from min to max, mean over seeds) with the
    test spread across seeds (± std) as a whisker at the range's top."""
    methods = list(panel["methods"].values())
    metrics = panel["metrics"]
    if not methods or not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 0.6 + 0.5 * len(methods)), squeeze=False,
                             sharey=True)
    for ax, k in zip(axes[0], metrics):
        for i, p in enumerate(methods):
            r = p["range"].get(k) or {}
            if r.get("min") is None:
                continue
            ax.barh(i, r["max"] - r["min"], left=r["min"], height=0.5, color="tab:blue", alpha=0.7)
            s = (p.get("seed_spread") or {}).get(k) or {}
            if s.get("std") is not None:
                ax.errorbar(r["max"], i, xerr=s["std"], fmt="none", ecolor="k", capsize=3)
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(methods)))
    axes[0][0].set_yticklabels([p["label"][:38] for p in methods], fontsize=8)
    fig.suptitle("Sensitivity: metric range across lambda / grid / trials (val); whisker: test std over seeds",
                 fontsize=9, y=1.0 + 0.35 / (0.6 + 0.5 * len(methods)))
    return save_png(fig, path)


def html_section(panel: dict[str, Any], png: Path | None) -> str:
    heads, rows = table_rows(panel)
    e = html.escape
    img = ""
    if png is not None and Path(png).is_file():
        img = f"<img src='data:image/png;base64,{base64.b64encode(Path(png).read_bytes()).decode()}'>"
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<h2>Sensitivity</h2><p>How much each metric moves across what a method varies ({e(panel['split'])}): "
            f"an LCT run's range is what one run can dial after training; a set of baseline runs' range is what "
            f"choosing before training risks. Numbers in sensitivity.json.</p><table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in heads) + f"</tr>{body}</table>{img}")


def add_to_report(page: str | Path, runs, *, prevalence: float | None = None, prior=None) -> Path:
    """Add the sensitivity panel of ``runs`` (``lossdial report``'s loaded runs) to the report page ``page``: a
    table and figure before ``</body>``; sensitivity.json and sensitivity.png beside it. Its values are at the
    page's ``prevalence`` (binary; None: the first run's training prevalence) or class ``prior``."""
    from lossdial.experiments.sensitivity import runs_sensitivity
    from lossdial.rundir import atomic_write_text, write_json

    page = Path(page)
    panel = runs_sensitivity(runs, prevalence=prevalence, prior=prior)
    write_json(page.parent / "sensitivity.json", panel)
    png = figure(panel, page.parent / "sensitivity.png") if panel["methods"] else None
    text = page.read_text()
    cut = text.rfind("</body>")
    section = html_section(panel, png)
    atomic_write_text(page, text[:cut] + section + text[cut:] if cut >= 0 else text + section)
    return page
