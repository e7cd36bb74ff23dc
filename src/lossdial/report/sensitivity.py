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
