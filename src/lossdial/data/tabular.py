"""CSV / Parquet tables with a named target column, and the preprocessing fitted on the training rows.

Reading: CSV with the standard library (no pandas); Parquet through ``pyarrow`` (the optional extra
``pip install lossdial[tables]``). Values ``""``, ``NA``, ``N/A``, ``NaN``, ``nan``, ``null``, ``NULL``,
``None`` and ``?`` are missing.

:class:`TablePreprocessor` (fitted on the training split only, saved in ``data.json`` as ``preprocessing``):

- numeric columns: missing values imputed with the training median, then standardised with the training
  mean and standard deviation (a constant column keeps std 1);
- categorical columns (any column with a non-numeric value in the training rows, or listed in
  ``data.categorical``): missing values imputed with the most frequent training category, then one-hot
  encoded over the training categories (a category unseen in training encodes as all zeros and is counted
  in ``last_unknown``).

At predict time :func:`read_predict_table` applies exactly the saved transform and stops with a clear error
when the columns differ from the training columns.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

from lossdial.data.sources import DataSourceError, Pool, require_path

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
PREPROCESSOR_VERSION = 1


class TableColumnsError(DataSourceError):
    """A table's columns do not match what the run was trained on."""


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, str):
        return v.strip().lower() in MISSING
    return False


def _to_float(v: Any) -> float | None:
    """A float, or None when the value is not numeric (missing values are handled by the caller)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def numeric_values(col: np.ndarray) -> np.ndarray:
    """A column as float64, NaN where a value is missing or not a number (the range record and check of a
    numeric column, see :func:`lossdial.data.task.raw_input_record`)."""
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col):
        f = None if _is_missing(v) else _to_float(v)
        if f is not None:
            out[i] = f
    return out


def read_table(path: str | Path, fmt: str | None = None) -> dict[str, np.ndarray]:
    """Columns of a CSV or Parquet file as object arrays (None for missing); ``fmt`` overrides the suffix."""
    path = Path(path)
    fmt = fmt or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataSourceError("reading Parquet needs pyarrow: pip install 'lossdial[tables]' (or pip install "
                                  "pyarrow), or convert the table to CSV") from None
        try:
            d = pq.read_table(path).to_pydict()
        except Exception as exc:  # noqa: BLE001
            raise DataSourceError(f"cannot read {path} as Parquet: {exc}") from exc
        cols = {str(k): np.array([None if _is_missing(v) else v for v in vals] + [None], dtype=object)[:-1]
                for k, vals in d.items()}
    else:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataSourceError(f"cannot read {path} as CSV: {exc}") from exc
        if not rows:
            raise DataSourceError(f"{path} is empty; a CSV needs a header row and data rows")
        header = [h.strip() for h in rows[0]]
        if len(set(header)) != len(header):
            dup = sorted(h for h, n in Counter(header).items() if n > 1)
            raise DataSourceError(f"{path}: duplicate column names {dup}")
        body = [r for r in rows[1:] if any(c.strip() for c in r)]
        bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
        if bad is not None:
            raise DataSourceError(f"{path}: data row {bad + 1} has {len(body[bad])} fields but the header has "
                                  f"{len(header)}")
        cols = {}
        for j, h in enumerate(header):
            arr = np.empty(len(body), dtype=object)
            arr[:] = [None if _is_missing(r[j]) else r[j].strip() for r in body]
            cols[h] = arr
    if not cols or len(next(iter(cols.values()))) == 0:
        raise DataSourceError(f"{path} has no data rows")
    return cols


def _canonical_labels(values: np.ndarray) -> list[str]:
    """Target values as class-name strings; integer-valued numbers lose their ".0"."""
    out = []
    for v in values:
        f = _to_float(v)
        out.append(str(int(f)) if f is not None and math.isfinite(f) and f == int(f) else str(v).strip())
    return out


def _sort_names(names: set[str]) -> list[str]:
    def key(n: str):
        f = _to_float(n)
        return (0, f, n) if f is not None and math.isfinite(f) else (1, 0.0, n)

    return sorted(names, key=key)


class TablePreprocessor:
    """Impute, standardise and one-hot encode table columns, with statistics from the training rows only.

    >>> pre = TablePreprocessor().fit({"age": np.array(["30", None, "50"], dtype=object),
    ...                                "city": np.array(["a", "b", None], dtype=object)})
    >>> pre.feature_names_out_
    ['age', 'city=a', 'city=b']
    >>> pre.transform({"age": np.array(["40"], dtype=object), "city": np.array(["b"], dtype=object)}).tolist()
    [[0.0, 0.0, 1.0]]
    """

    def __init__(self, features: Sequence[str] | None = None, categorical: Sequence[str] | None = None,
                 ignore: Sequence[str] = ()):
        self.features = list(features) if features is not None else None
        self.categorical = list(categorical) if categorical is not None else None
        self.ignore = list(ignore)  # columns allowed at transform time but not used (target, id)
        self.last_unknown: dict[str, int] = {}

    # fitted: columns_ (list of dicts), feature_names_out_
    def fit(self, columns: Mapping[str, np.ndarray]) -> "TablePreprocessor":
        names = self.features if self.features is not None else [c for c in columns if c not in self.ignore]
        missing = [c for c in names if c not in columns]
        if missing:
            raise TableColumnsError(f"data.features names columns {missing} that the table lacks; it has "
                                    f"{list(columns)}")
        forced = set(self.categorical or [])
        unknown = sorted(forced - set(names))
        if unknown:
            raise TableColumnsError(f"data.categorical names {unknown}, which are not feature columns {names}")
        if not names:
            raise TableColumnsError("the table has no feature columns besides the target (and id) column")
        specs = []
        for c in names:
            vals = [v for v in columns[c] if not _is_missing(v)]
            nums = [_to_float(v) for v in vals]
            if c not in forced and all(f is not None for f in nums):
                arr = np.array(nums, dtype=np.float64)
                arr = arr[np.isfinite(arr)]
                median = float(np.median(arr)) if len(arr) else 0.0
                filled = np.array([median if f is None or not math.isfinite(f) else f
                                   for f in (None if _is_missing(v) else _to_float(v) for v in columns[c])])
                mean = float(filled.mean()) if len(filled) else 0.0
                std = float(filled.std()) if len(filled) else 1.0
                specs.append({"name": c, "type": "numeric", "median": median, "mean": mean,
                              "std": std if std > 1e-12 else 1.0})
            else:
                strs = [str(v).strip() for v in vals]
                if not strs:
                    cats, mode = [], None
                else:
                    counts = Counter(strs)
                    cats = sorted(counts)
                    mode = max(cats, key=lambda k: (counts[k], -cats.index(k)))
                specs.append({"name": c, "type": "categorical", "categories": cats, "mode": mode})
        self.columns_ = specs
        self.feature_names_out_ = [s["name"] if s["type"] == "numeric" else f"{s['name']}={k}"
                                   for s in specs for k in ([None] if s["type"] == "numeric" else s["categories"])]
        return self

    def check_columns(self, columns: Sequence[str]) -> None:
        """Stop with a clear error when ``columns`` lack a training column or carry unknown ones."""
        have = list(columns)
        need = [s["name"] for s in self.columns_]
        lacking = [c for c in need if c not in have]
        extra = [c for c in have if c not in need and c not in self.ignore]
        if lacking or extra:
            parts = []
            if lacking:
                parts.append(f"lacks columns {lacking}")
            if extra:
                parts.append(f"has columns {extra} the run was not trained on")
            raise TableColumnsError(
                f"the table's columns differ from the training columns: it {' and '.join(parts)}. The run was "
                f"trained on {need}" + (f" (ignoring {self.ignore})" if self.ignore else "")
                + "; give a table with exactly those columns")

    def transform(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 [N, len(feature_names_out_)]; errors if columns differ or a numeric column holds text."""
        self.check_columns(list(columns))
        n = len(next(iter(columns.values()))) if columns else 0
        blocks = []
        self.last_unknown = {}
        for s in self.columns_:
            col = columns[s["name"]]
            if s["type"] == "numeric":
                out = np.empty(n, dtype=np.float64)
                for i, v in enumerate(col):
                    f = None if _is_missing(v) else _to_float(v)
                    if f is None and not _is_missing(v):
                        raise DataSourceError(f"column {s['name']!r} is numeric in training but row {i + 1} holds "
                                              f"{v!r}; fix the value or list the column in data.categorical")
                    out[i] = s["median"] if f is None or not math.isfinite(f) else f
                blocks.append(((out - s["mean"]) / s["std"])[:, None])
            else:
                cats = s["categories"]
                lut = {k: j for j, k in enumerate(cats)}
                oh = np.zeros((n, len(cats)), dtype=np.float64)
                unknown = 0
                for i, v in enumerate(col):
                    key = s["mode"] if _is_missing(v) else str(v).strip()
                    j = lut.get(key)
                    if j is None:
                        unknown += 1 if key is not None else 0
                    else:
                        oh[i, j] = 1.0
                if unknown:
                    self.last_unknown[s["name"]] = unknown
                blocks.append(oh)
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"version": PREPROCESSOR_VERSION, "columns": self.columns_, "ignore": self.ignore,
                "feature_names_out": self.feature_names_out_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TablePreprocessor":
        if int(d.get("version", 0)) != PREPROCESSOR_VERSION:
            raise ValueError(f"table preprocessing format {d.get('version')} is not supported by this lossdial "
                             f"(expects {PREPROCESSOR_VERSION})")
        obj = cls(features=[c["name"] for c in d["columns"]], ignore=d.get("ignore", ()))
        obj.columns_ = [dict(c) for c in d["columns"]]
        obj.feature_names_out_ = list(d["feature_names_out"])
        return obj


def load_table(path: str | Path, *, target: str | None, test_path: str | Path | None = None,
               features: Sequence[str] | None = None, categorical: Sequence[str] | None = None,
               id_column: str | None = None, fmt: str | None = None) -> Pool:
    """A CSV/Parquet table as a raw-column pool (preprocessed later, fitted on the training split).

    ``target`` names the label column (its values are the class names); ``features`` selects the input
    columns (default: all but target and ``id_column``); ``categorical`` forces columns to be one-hot
    encoded; ``test_path`` is a second table used as the source's own test split.
    """
    p = require_path(path, "path", "CSV/Parquet table")
    if not target:
        raise DataSourceError("data.target is required for a table: the name of the label column")
    train_cols = read_table(p, fmt if fmt in ("csv", "parquet") else None)
    parts = [(p, train_cols)]
    if test_path is not None:
        t = require_path(test_path, "test_path", "CSV/Parquet table of the test split")
        parts.append((t, read_table(t, fmt if fmt in ("csv", "parquet") else None)))
    labels = []
    for src, cols in parts:
        if target not in cols:
            raise DataSourceError(f"{src}: target column {target!r} does not exist; columns: {list(cols)}. Set "
                                  f"data.target to one of them")
        if id_column is not None and id_column not in cols:
            raise DataSourceError(f"{src}: id column {id_column!r} does not exist; columns: {list(cols)}")
        miss = [i + 1 for i, v in enumerate(cols[target]) if _is_missing(v)]
        if miss:
            raise DataSourceError(f"{src}: target column {target!r} is missing in {len(miss)} row(s) (data rows "
                                  f"{miss[:5]}); drop or fill those rows")
        labels.append(_canonical_labels(cols[target]))
    names = _sort_names(set(labels[0]))
    if len(names) < 2:
        raise DataSourceError(f"{p}: target column {target!r} has a single class {names}; a classifier needs at "
                              f"least two classes")
    if len(parts) == 2:
        if list(parts[1][1]) != list(train_cols):
            raise TableColumnsError(f"{parts[1][0]} has columns {list(parts[1][1])} but {p} has {list(train_cols)}")
        unseen = sorted(set(labels[1]) - set(names))
        if unseen:
            raise DataSourceError(f"{parts[1][0]}: target values {unseen[:5]} never occur in the training table {p}")
    lut = {n: i for i, n in enumerate(names)}
    pools = []
    for (src, cols), lab in zip(parts, labels):
        pools.append(Pool(x=None, y=np.array([lut[v] for v in lab], dtype=np.int64), class_names=names,
                          kind="table", columns=cols))
    ignore = [target] + ([id_column] if id_column else [])
    use = list(features) if features is not None else [c for c in train_cols if c not in ignore]
    lacking = [c for c in use if c not in train_cols]
    if lacking:
        raise TableColumnsError(f"data.features names columns {lacking} that {p} lacks; it has {list(train_cols)}")
    meta = {"name": "table", "format": fmt or p.suffix.lstrip("."), "path": str(p.resolve()), "target": target,
            "id_column": id_column, "features": use, "categorical": list(categorical) if categorical else None,
            "n_rows": int(sum(len(pl) for pl in pools))}
    if len(pools) == 2:
        meta["test_path"] = str(Path(test_path).resolve())
    pool = Pool.concat(pools[0], pools[1], meta) if len(pools) == 2 else pools[0]
    pool.meta = meta
    return pool


def make_preprocessor(pool: Pool) -> TablePreprocessor:
    m = pool.meta
    ignore = [m["target"]] + ([m["id_column"]] if m.get("id_column") else [])
    return TablePreprocessor(features=m["features"], categorical=m.get("categorical"), ignore=ignore)


def read_predict_table(path: str | Path, data: Mapping[str, Any]) -> tuple[list[str], "torch.Tensor"]:
    """(ids, inputs) of a CSV/Parquet table for ``lossdial predict``, transformed as at training time.

    ``data`` is the run's ``data.json``: its ``preprocessing`` entry is the fitted :class:`TablePreprocessor`.
    Ids come from the training ``id_column`` when the table has it, else the 0-based row numbers.
    """
    return table_inputs(read_table(Path(path)), data)


def table_inputs(cols: Mapping[str, np.ndarray], data: Mapping[str, Any]) -> tuple[list[str], "torch.Tensor"]:
    """(ids, inputs) of table columns already read (see :func:`read_predict_table`)."""
    import torch

    if not data.get("preprocessing"):
        raise DataSourceError("this run was not trained on a CSV/Parquet table (its data.json has no "
                              "preprocessing); predict from an .npz with array x instead")
    pre = TablePreprocessor.from_dict(data["preprocessing"])
    x = pre.transform(cols)
    id_col = (data.get("source") or {}).get("id_column")
    ids = [str(v) for v in cols[id_col]] if id_col and id_col in cols else [str(i) for i in range(len(x))]
    return ids, torch.from_numpy(x)
