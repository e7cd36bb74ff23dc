"""The page `lossdial serve` shows at ``GET /``: one function, so the page can change without the server."""

from __future__ import annotations

import warnings
from pathlib import Path


def dial_page(loaded, workdir: str | Path) -> str:
    """The HTML of the run's dial page, built once into ``workdir``: for now the page `lossdial report` writes
    for the run (:func:`lossdial.report.html.build_report` on the validation split)."""
    from lossdial.report.html import build_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        page = build_report([loaded], Path(workdir), split="val")
    return Path(page).read_text(encoding="utf-8")
