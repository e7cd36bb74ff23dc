"""The HTTP application of `lossdial serve` (FastAPI; the ``serve`` extra).

``POST /score`` (JSON or multipart), ``GET /points``, ``GET /health``, ``GET /`` (the dial page). The request
handling itself is :class:`lossdial.serve.service.Service`; the body limit is
:class:`lossdial.serve.limit.BodyLimit`, wrapped around the whole application.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request, imported
# lazily inside create_app) at definition time
from typing import Any

from lossdial.serve import DEFAULT_MAX_BODY_BYTES, require_serve_deps
from lossdial.serve.limit import BodyLimit
from lossdial.serve.service import ServeError, Service

#: the most uploaded files (and other form fields) one multipart request may carry
MAX_FORM_FILES = 4096
#: how long GET / waits for a dial page still being built before answering 503
PAGE_WAIT_S = 60.0


def create_app(service: Service, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, page=None):
    """The ASGI application serving ``service`` (a :class:`Service`: one loaded run and its model card).

    ``page``: a :class:`lossdial.serve.page.PageBuild` whose HTML ``GET /`` shows (503 while it is being built
    for longer than :data:`PAGE_WAIT_S`, or when it failed); None: ``GET /`` answers 404. Request bodies over
    ``max_body_bytes`` get 413.
    """
    require_serve_deps()
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import UploadFile

    loaded = service.loaded
    # One thread does the requests' CPU work (parse, check, score), one request after another: the work is mostly
    # Python holding the GIL between small torch calls, so more threads would mostly contend for the GIL. Torch's
    # own threads (torch.set_num_threads, `lossdial serve --threads`) spread each model pass over the cores.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossdial-serve")

    async def in_worker(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    app = FastAPI(title="lossdial serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ServeError)
    async def _bad_request(request: Request, exc: ServeError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "run": str(loaded.path), "task": loaded.task_type.name, "lct": loaded.is_lct,
                "inputs": service.describe_inputs(), "max_body_bytes": max_body_bytes}

    @app.get("/points")
    async def points() -> dict[str, Any]:
        out: dict[str, Any] = {"task": loaded.task_type.name, "dial": service.dial,
                               "lambda_support": service.lambda_support(),
                               "points": {n: service.point_entry(n) for n in service.points}}
        if service.multiclass:
            out["classes"] = service.class_names
        if service.point_errors:
            out["unusable"] = service.point_errors
        return out

    @app.get("/", response_class=HTMLResponse)
    async def dial_page():
        if page is None:
            return JSONResponse({"detail": "this server runs without the dial page (lossdial serve --no-page)"},
                                status_code=404)
        if not await run_in_threadpool(page.wait, PAGE_WAIT_S):
            return JSONResponse({"detail": "the dial page is still being built; try again in a few seconds"},
                                status_code=503, headers={"retry-after": "5"})
        if page.html is None:
            return JSONResponse({"detail": f"the dial page could not be built: {page.error}"}, status_code=503)
        return HTMLResponse(page.html)

    @app.post("/score")
    async def score(request: Request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json" or ctype.endswith("+json"):
            job = await in_worker(service.json_job, await request.body())
        elif ctype == "multipart/form-data":
            form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FILES)
            fields: dict[str, str] = {}
            files = []
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.append((key, value.filename, await value.read()))
                elif key in fields:
                    raise ServeError(422, f"form field {key!r} is given twice")
                else:
                    fields[key] = value
            await form.close()
            job = await in_worker(service.form_job, fields, files)
        else:
            raise ServeError(415, f"POST /score takes Content-Type application/json (inputs as arrays or rows) or "
                                  f"multipart/form-data (files), got {ctype or 'none'!r}")
        return JSONResponse(await in_worker(service.score, job))

    return BodyLimit(app, max_body_bytes)
