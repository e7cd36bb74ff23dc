"""What `lossdial serve` does with a request, without HTTP: parse and check it, score it, shape the answer.

:class:`Service` holds one loaded run and the model card's named points (resolved once, at start). A request
names its operating point(s) and carries inputs; :meth:`Service.json_job` (a JSON body) and
:meth:`Service.form_job` (a multipart upload) turn it into a :class:`Job` -- inputs checked against the run's
raw input format by :mod:`lossdial.predict`'s own readers (:func:`~lossdial.predict.array_inputs`,
:func:`~lossdial.predict.column_inputs`, :func:`~lossdial.predict.read_inputs`), points resolved by
:func:`~lossdial.predict.operating_point` -- or raise :class:`ServeError` (a 4xx status and a message naming
the problem). :meth:`Service.score` scores every input at every point of a job with one backbone pass
(:func:`~lossdial.predict.point_scores`).

Request fields (JSON object, or multipart form fields beside the uploaded ``files``):

- ``inputs``: a list, one entry per input, in the run's raw format: an image as a nested array ([H, W],
  [C, H, W] or [H, W, C]); an array-table row as a list of feature values; a CSV/Parquet-table row as a
  list of the training columns' values in order, or a record ``{column: value}`` (a value: number, string
  or null for missing). JSON does not tell 1 from 1.0: numbers are read as the kind the run was trained on
  when they can be (whole numbers as integers for an integer-pixel run; any number as a float for a float
  run).
- the operating point, one of: ``point`` (a name from the model card); ``lambda`` (LCT runs; an object
  ``{name: value}`` inside the trained support) with ``threshold`` (binary runs, a threshold on
  P(positive) in [0, 1]) or ``adjustment`` (multi-class runs, the post-hoc logit-adjustment strength t);
  ``points`` -- a list of names and/or ``{"lambda": ..., "threshold"/"adjustment": ...}`` objects.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from lossdial.predict import IMAGE_SUFFIXES, OperatingPoint, PredictInputError

#: the most operating points one request may name
MAX_POINTS = 64
#: file suffixes an upload may carry besides images (one file per request)
TABLE_SUFFIXES = (".csv", ".parquet", ".npz")


class ServeError(Exception):
    """A bad request: ``status`` (4xx) and a message naming the problem and the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> ServeError:
    return ServeError(422, message)


class Job(NamedTuple):
    """A checked request: input ids, raw inputs, what was done to them (notes) and what looks off
    (warnings), and the operating points -- (name or None, point) -- with whether the request gave a list."""

    ids: list[str]
    x: torch.Tensor
    notes: list[str]
    warnings: list[str]
    points: list[tuple[str | None, OperatingPoint]]
    many: bool


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _json_number(value: Any, what: str) -> float:
    """A JSON number (not a bool, string or null) that is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{what} must be a number, got {json.dumps(value)[:60]}")
    if not math.isfinite(value):
        raise _bad(f"{what} must be a finite number, got {value}")
    return float(value)


class Service:
    """One loaded run (:func:`lossdial.evaluate.load_run`) and its model card's points, ready to score requests.

    Model-card points that cannot be used (a multi-class point without ``adjustment``, a lambda outside the
    trained support) are kept in :attr:`point_errors`: a request naming one gets that reason.
    """

    def __init__(self, loaded, card: Mapping[str, Any] | None = None):
        from lossdial.predict import operating_point
        from lossdial.report.card import load_card

        self.loaded = loaded
        self.multiclass = loaded.task_type.name == "multiclass"
        self.dial = "adjustment" if self.multiclass else "threshold"
        self.rec = loaded.data.get("raw_input")
        self.class_names = list(loaded.data["class_names"])
        card = card if card is not None else (load_card(loaded.path) or {"points": {}})
        self.card_points: dict[str, Any] = dict(card.get("points") or {})
        self.points: dict[str, OperatingPoint] = {}
        self.point_errors: dict[str, str] = {}
        for name, entry in self.card_points.items():
            try:
                op = operating_point(loaded, entry, name=name)
                if op.lam is not None:
                    self._check_support(op.lam, f"model card point {name!r}: lambda")
                self.points[name] = op
            except (ValueError, KeyError, ServeError) as exc:
                self.point_errors[name] = getattr(exc, "message", None) or str(exc)
        self._lock = threading.Lock()  # one model pass at a time (the HTTP app calls from one thread anyway)

    # ---------------------------------------------------------------------------------------------------
    # what the run takes

    def describe_inputs(self) -> dict[str, Any]:
        """The raw input format requests must match (for ``GET /health``)."""
        rec = self.rec
        if rec is None:
            return {"kind": self.loaded.data.get("kind"), "shape": self.loaded.data.get("input_shape"),
                    "checked": False}
        if rec.get("format") == "columns":
            return {"kind": "table", "columns": rec["columns"]}
        out = {"kind": rec["kind"], "shape": rec["shape"], "dtype": rec["dtype"], "value_range": rec["value_range"]}
        if rec["kind"] == "image":
            out["image_size"] = rec.get("image_size")
        return out

    def lambda_support(self) -> dict[str, list[float]] | None:
        """{name: [low, high]} of each lambda component (None for a baseline run)."""
        if not self.loaded.is_lct:
            return None
        return {n: [float(lo), float(hi)] for n, (lo, hi) in self.loaded.space.supports.items()}

    def point_entry(self, name: str) -> dict[str, Any]:
        """A card point as ``GET /points`` shows it: the point itself and how it was chosen."""
        op = self.points[name]
        entry = self.card_points[name]
        out: dict[str, Any] = {"lambda": op.lam, self.dial: op.value}
        for k in ("objective", "constraint", "prevalence", "prior", "prior_source", "val", "test"):
            if k in entry:
                out[k] = entry[k]
        return out

    # ---------------------------------------------------------------------------------------------------
    # operating points

    def _check_support(self, lam: Mapping[str, float], what: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problems = self.loaded.space.check_support(lam)
        if problems:
            raise _bad(f"{what}: {'; '.join(problems)} (GET /points lists the support)")

    def _lambda(self, value: Any, what: str) -> dict[str, float]:
        names = list(self.loaded.space.names)
        example = json.dumps({n: round(sum(self.lambda_support()[n]) / 2, 3) for n in names})
        if not isinstance(value, dict):
            raise _bad(f"{what} must be an object {{name: number}} over {names}, e.g. {example}")
        missing = [n for n in names if n not in value]
        unknown = [k for k in value if k not in names]
        if missing or unknown:
            parts = ([f"lacks {missing}"] if missing else []) + ([f"has unknown names {unknown}"] if unknown else [])
            raise _bad(f"{what} {' and '.join(parts)}; this run's lambda has {names}, e.g. {example}")
        lam = {n: _json_number(value[n], f"{what}.{n}") for n in names}
        self._check_support(lam, what)
        return lam

    def _point(self, spec: Any, prefix: str) -> tuple[str | None, OperatingPoint]:
        """One operating point from a name or an explicit object; ``prefix`` names it in messages."""
        where = prefix or "the request"
        if isinstance(spec, str):
            if spec in self.point_errors:
                raise _bad(f"{where}: model card point {spec!r} cannot be used: {self.point_errors[spec]}")
            if spec not in self.points:
                known = sorted(self.points)
                raise _bad(f"{where}: unknown point {spec!r}; "
                           + (f"the model card's points are {known} (GET /points)" if known else
                              f"the run's model card has no named points (create one with `lossdial pick "
                              f"{self.loaded.path} --name NAME ...`), so give the point explicitly: "
                              f"{self._explicit_example()}"))
            return spec, self.points[spec]
        if not isinstance(spec, dict):
            raise _bad(f"{where} must be a point name (a string) or an object {self._explicit_example()}, got "
                       f"{json.dumps(spec)[:60]}")
        other = "threshold" if self.multiclass else "adjustment"
        if other in spec:
            raise _bad(f"{_field(prefix, other)}: " + (
                "a threshold on P(positive) applies to binary runs; a multi-class run's operating point is lambda "
                "and 'adjustment' t (probabilities softmax(z_c - t log pi_c); 0: the model's own, 1: full logit "
                "adjustment)" if self.multiclass else
                "the post-hoc logit adjustment applies to multi-class runs; a binary run's operating point is "
                "lambda and 'threshold' on P(positive)"))
        unknown = sorted(k for k in spec if k not in ("lambda", self.dial))
        if unknown:
            raise _bad(f"{where} has unknown field(s) {unknown}; a point has 'lambda' and {self.dial!r}")
        if self.dial not in spec:
            raise _bad(f"{where} lacks {self.dial!r}: give {self._explicit_example()}, or 'point' with a name "
                       f"from GET /points")
        value = _json_number(spec[self.dial], _field(prefix, self.dial))
        if not self.multiclass and not 0.0 <= value <= 1.0:
            raise _bad(f"{_field(prefix, 'threshold')} must lie in [0, 1] (a threshold on P(positive)), got {value:g}")
        if self.loaded.is_lct:
            if "lambda" not in spec:
                raise _bad(f"{where} lacks 'lambda': this is an LCT run, its operating point needs one, e.g. "
                           f"{self._explicit_example()}")
            lam = self._lambda(spec["lambda"], _field(prefix, "lambda"))
        else:
            if "lambda" in spec:
                raise _bad(f"{_field(prefix, 'lambda')}: this run is a baseline, trained at one fixed loss setting; "
                           f"it has no lambda to choose: drop 'lambda'")
            lam = None
        if self.multiclass:
            return None, OperatingPoint(lam, None, value)
        return None, OperatingPoint(lam, value, None)

    def _explicit_example(self) -> str:
        ex: dict[str, Any] = {}
        if self.loaded.is_lct:
            ex["lambda"] = {n: round((lo + hi) / 2, 3) for n, (lo, hi) in self.lambda_support().items()}
        ex[self.dial] = 1.0 if self.multiclass else 0.5
        return json.dumps(ex)

    def _points(self, fields: Mapping[str, Any]) -> tuple[list[tuple[str | None, OperatingPoint]], bool]:
        explicit = [k for k in ("lambda", "threshold", "adjustment") if k in fields]
        given = [k for k in ("point", "points") if k in fields] + (["/".join(explicit)] if explicit else [])
        if len(given) > 1:
            raise _bad(f"give one of 'point', 'points', or 'lambda' with {self.dial!r}; the request has "
                       f"{' and '.join(repr(g) for g in given)}")
        if not given:
            raise _bad(f"missing the operating point: give 'point' (a name from GET /points), 'points' (a list "
                       f"of names and/or objects) or the point itself: {self._explicit_example()}")
        if "points" in fields:
            pts = fields["points"]
            if not isinstance(pts, list) or not pts:
                raise _bad("'points' must be a non-empty list of point names and/or objects "
                           f"{self._explicit_example()}")
            if len(pts) > MAX_POINTS:
                raise _bad(f"'points' lists {len(pts)} points; at most {MAX_POINTS} per request")
            return [self._point(p, f"points[{i}]") for i, p in enumerate(pts)], True
        if "point" in fields:
            return [self._point(fields["point"], "point")], False
        return [self._point({k: fields[k] for k in explicit}, "")], False

    # ---------------------------------------------------------------------------------------------------
    # inputs

    def _json_inputs(self, value: Any) -> tuple[list[str], torch.Tensor, list[str], list[str]]:
        if not isinstance(value, list) or not value:
            raise _bad("'inputs' must be a non-empty list, one entry per input (" + self._inputs_text() + ")")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if self.rec is not None and self.rec.get("format") == "columns":
                    got = self._table_rows(value)
                else:
                    got = self._arrays(value)
            except PredictInputError as exc:
                raise _bad(str(exc)) from None
            except ValueError as exc:  # the table preprocessor's own errors (DataSourceError)
                raise _bad(f"inputs: {exc}") from None
        return got.ids, got.x, got.notes, [str(w.message) for w in caught]

    def _inputs_text(self) -> str:
        rec = self.rec
        if rec is None:
            return f"arrays of shape {self.loaded.data.get('input_shape')}"
        if rec.get("format") == "columns":
            return (f"rows: lists of the values of the training columns {rec['columns']} in that order, or records "
                    f"{{column: value}}")
        if rec["kind"] == "image":
            return f"images as nested arrays of shape {rec['shape']} ([C, H, W]; [H, W] or [H, W, C] also read)"
        return f"rows of {rec['shape'][0]} feature values"

    def _arrays(self, value: list):
        from lossdial.predict import array_inputs

        try:
            a = np.asarray(value)
        except (ValueError, TypeError):
            raise _bad(f"'inputs' are nested lists of different lengths: every input must have the same shape, "
                       f"{self._inputs_text()}") from None
        if a.dtype == object or a.dtype.kind in "US":
            raise _bad(f"'inputs' hold something other than numbers (text, null or nested objects): give "
                       f"{self._inputs_text()}")
        if a.dtype.kind == "b":
            raise _bad("'inputs' hold true/false values; give numbers")
        rec = self.rec
        if rec is not None:
            if rec["dtype_kind"] == "float" and a.dtype.kind in "iu":
                a = a.astype(np.float64)  # JSON wrote 1.0 as 1
            elif rec["dtype_kind"] == "integer" and a.dtype.kind == "f" and np.isfinite(a).all() \
                    and np.array_equal(a, np.round(a)):
                a = a.astype(np.int64)  # JSON wrote 1 as 1.0
        return array_inputs(a, [str(i) for i in range(len(a))], self.loaded.data, rec, "inputs")

    def _table_rows(self, value: list):
        from lossdial.predict import column_inputs

        names = list(self.rec["columns"])
        if all(isinstance(r, dict) for r in value):
            keys = list(value[0])
            for i, r in enumerate(value):
                if set(r) != set(keys):
                    raise _bad(f"inputs[{i}] has the fields {sorted(r)} but inputs[0] has {sorted(keys)}; every "
                               f"record needs the training columns {names}")
            rows = [[r[k] for k in keys] for r in value]
        elif all(isinstance(r, list) for r in value):
            for i, r in enumerate(value):
                if len(r) != len(names):
                    raise _bad(f"inputs[{i}] has {len(r)} values but the run was trained on {len(names)} columns "
                               f"{names}; give them in that order, or give records {{column: value}}")
            keys = names
            rows = value
        else:
            raise _bad(f"'inputs' of this table run are {self._inputs_text()}; the list mixes them or holds "
                       f"something else")
        for i, r in enumerate(rows):
            for k, v in zip(keys, r):
                if v is not None and (isinstance(v, (bool, list, dict)) or not isinstance(v, (int, float, str))):
                    raise _bad(f"inputs[{i}] column {k!r} is {json.dumps(v)[:40]}; a table value is a number, a "
                               f"string or null (missing)")
        cols = {}
        for j, k in enumerate(keys):
            col = np.empty(len(rows), dtype=object)
            col[:] = [r[j] for r in rows]
            cols[k] = col
        return column_inputs(cols, self.loaded.data, self.rec, "inputs")

    # ---------------------------------------------------------------------------------------------------
    # requests

    def json_job(self, raw: bytes) -> Job:
        """A JSON request body (bytes) as a checked :class:`Job`."""
        try:
            body = json.loads(raw)
        except RecursionError:
            raise ServeError(400, "the JSON body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServeError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object: {\"inputs\": [...], \"point\": NAME} (or \"points\": [...], "
                       f"or the point itself, {self._explicit_example()[1:-1]})")
        allowed = {"inputs", "point", "points", "lambda", "threshold", "adjustment"}
        unknown = sorted(k for k in body if k not in allowed)
        if unknown:
            raise _bad(f"unknown field(s) {unknown}; a request has 'inputs' and 'point', 'points', or 'lambda' "
                       f"with {self.dial!r}")
        points, many = self._points(body)
        if "inputs" not in body:
            raise _bad(f"missing field 'inputs': a list of the inputs to score, {self._inputs_text()}")
        ids, x, notes, warned = self._json_inputs(body["inputs"])
        return Job(ids, x, notes, warned, points, many)

    def form_job(self, fields: Mapping[str, str], files: list[tuple[str, str, bytes]]) -> Job:
        """A multipart request as a checked :class:`Job`: ``fields`` (form field -> text: ``point``, ``points``
        and ``lambda`` as JSON, ``threshold`` / ``adjustment`` as numbers) and ``files`` (field, file name,
        content): image files, or one .csv / .parquet / .npz, all under the field ``files``."""
        from lossdial.predict import read_inputs

        unknown = sorted(k for k in fields if k not in ("point", "points", "lambda", "threshold", "adjustment"))
        if unknown:
            raise _bad(f"unknown form field(s) {unknown}; a multipart request has the files under 'files' and "
                       f"'point', 'points' (JSON), or 'lambda' (JSON) with {self.dial!r}")
        parsed: dict[str, Any] = {}
        for k, text in fields.items():
            if k == "point":
                parsed[k] = text
            elif k in ("points", "lambda"):
                try:
                    parsed[k] = json.loads(text)
                except ValueError:
                    raise _bad(f"form field {k!r} must be JSON, e.g. "
                               + ('["screening", {"threshold": 0.3}]' if k == "points" else '{"tau": 1.5}')
                               + f"; got {text[:60]!r}") from None
            else:
                try:
                    parsed[k] = float(text)
                except ValueError:
                    raise _bad(f"form field {k!r} must be a number, got {text[:60]!r}") from None
        points, many = self._points(parsed)
        stray = sorted({f for f, _, _ in files if f != "files"})
        if stray:
            raise _bad(f"upload the inputs under the form field 'files', not {stray}")
        if not files:
            raise _bad("missing the inputs: upload image files, or one .csv / .parquet / .npz, under the form field "
                       "'files'")
        names = []
        for _, filename, _ in files:
            name = Path((filename or "").replace("\\", "/")).name
            suffix = Path(name).suffix.lower()
            if not name or name.startswith(".") or suffix not in IMAGE_SUFFIXES | set(TABLE_SUFFIXES):
                raise _bad(f"uploaded file {filename!r}: give image files ({', '.join(sorted(IMAGE_SUFFIXES))}) or "
                           f"one table ({', '.join(TABLE_SUFFIXES)})")
            names.append(name)
        tables = [n for n in names if Path(n).suffix.lower() in TABLE_SUFFIXES]
        if tables and len(names) > 1:
            raise _bad(f"upload one table file per request, or image files only; got {len(names)} files "
                       f"including {tables[0]!r}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _bad(f"uploaded file names must differ (they become the input ids); repeated: {dup[:5]}")
        with tempfile.TemporaryDirectory(prefix="lossdial-serve-") as tmp:
            folder = Path(tmp) / "inputs"
            folder.mkdir()
            for name, (_, _, content) in zip(names, files):
                (folder / name).write_bytes(content)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    got = read_inputs(folder / tables[0] if tables else folder, self.loaded.data)
                except ValueError as exc:  # PredictInputError, the table reader's DataSourceError
                    raise _bad(f"files: {exc}".replace(str(folder) + "/", "").replace(str(folder), "the upload"))
        return Job(got.ids, got.x, got.notes, [str(w.message) for w in caught], points, many)

    # ---------------------------------------------------------------------------------------------------
    # scoring

    def score(self, job: Job) -> dict[str, Any]:
        """The answer to a checked job: ``ids``, and per point ``scores``, ``decisions``, ``lambda`` and the
        threshold / adjustment (one point: at the top level; several: ``results``, in the request's order)."""
        from lossdial.predict import decide, point_scores, top_k

        with self._lock:
            outs = point_scores(self.loaded, job.x, [op for _, op in job.points])
        results = []
        for (name, op), s in zip(job.points, outs):
            r: dict[str, Any] = {"point": name} if name is not None else {}
            r["lambda"] = op.lam
            if self.multiclass:
                top = top_k(s, 1)
                r.update({"adjustment": op.adjustment, "scores": s.tolist(),
                          "decisions": [self.class_names[int(c)] for c in top.classes[:, 0]]})
            else:
                r.update({"threshold": op.threshold, "scores": s.tolist(),
                          "decisions": decide(s, op.threshold).tolist()})
            results.append(r)
        out: dict[str, Any] = {"ids": job.ids}
        if self.multiclass:
            out["classes"] = self.class_names
        if job.many:
            out["results"] = results
        else:
            out.update(results[0])
        if job.notes:
            out["notes"] = job.notes
        if job.warnings:
            out["warnings"] = job.warnings
        return out
