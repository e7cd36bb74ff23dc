"""The page `lossdial serve` shows at ``GET /``: :func:`dial_page` is the one function that makes it, so the page
can change without the server; :class:`PageBuild` makes it once, in the background, at start."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Callable


def dial_page(loaded, workdir: str | Path) -> str:
    """The HTML of the run's dial page, built once into ``workdir``: for now the page `lossdial report` writes
    for the run (:func:`lossdial.report.html.build_report` on the validation split)."""
    from lossdial.report.html import build_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        page = build_report([loaded], Path(workdir), split="val")
    return Path(page).read_text(encoding="utf-8")


class PageBuild:
    """:func:`dial_page` run once in a background thread, started at construction (the server answers
    ``/score`` meanwhile). :meth:`wait` says whether it is done; then :attr:`html` or :attr:`error` is set.
    ``on_error`` (e.g. the CLI's warning printer) is called with the error message if the build fails."""

    def __init__(self, loaded, workdir: str | Path, on_error: Callable[[str], None] | None = None):
        self.html: str | None = None
        self.error: str | None = None
        self._done = threading.Event()
        self._args = (loaded, workdir, on_error)
        threading.Thread(target=self._run, name="lossdial-dial-page", daemon=True).start()

    def _run(self) -> None:
        loaded, workdir, on_error = self._args
        try:
            self.html = dial_page(loaded, workdir)
        except Exception as exc:  # noqa: BLE001 - the page is optional; scoring works without it
            self.error = str(exc) or type(exc).__name__
            if on_error is not None:
                on_error(self.error)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)
