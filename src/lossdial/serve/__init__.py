"""`lossdial serve`: one finished run over HTTP, the operating point chosen per request.

The model is loaded once; ``POST /score`` scores inputs in the run's raw format at one or several operating
points (the model card's named points, or explicit lambda with threshold / adjustment) with one backbone pass
per request; ``GET /points``, ``GET /health`` and ``GET /`` (the dial page) describe the run. Inputs are
checked as ``lossdial predict`` checks them (:mod:`lossdial.predict`); a bad request gets a 4xx naming the
problem, never a score.

The HTTP stack (FastAPI, uvicorn, python-multipart) is the optional ``serve`` extra: this package imports
without it, and :func:`require_serve_deps` names the fix when it is missing. The request handling that needs
no HTTP (:mod:`lossdial.serve.service`) and the body-size limit (:mod:`lossdial.serve.limit`, plain ASGI) do
not import it at all.
"""

from __future__ import annotations

#: what to install for `lossdial serve`
SERVE_EXTRA = "pip install 'lossdial[serve]'"
#: the default limit on a request body, in bytes (``lossdial serve --max-body-mb``)
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def require_serve_deps() -> None:
    """Raise ``ImportError`` naming ``pip install lossdial[serve]`` when FastAPI, uvicorn or python-multipart is
    missing."""
    import importlib.util

    def found(*modules: str) -> bool:
        return any(importlib.util.find_spec(m) is not None for m in modules)

    # python-multipart's module is python_multipart since 0.0.13, multipart before
    missing = [name for name, mods in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                       ("python-multipart", ["python_multipart", "multipart"])) if not found(*mods)]
    if missing:
        raise ImportError(f"lossdial serve needs {', '.join(missing)}: {SERVE_EXTRA}")
