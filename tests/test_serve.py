"""`lossdial serve`: a real uvicorn process per run, every endpoint and every kind of bad request.

The served answers are checked against `lossdial predict`'s library path on the same inputs and point
(read_inputs of an .npz / the CSV, then predict / class_probabilities) and against a forward pass written out
by hand (normalise with data.json's statistics, model(x, z), softmax). Bad requests must get a 4xx naming the
problem and never a score; bodies over the limit get 413 before they are read whole.
"""

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.evaluate import load_run
from lossdial.predict import class_probabilities, operating_point, predict, predict_topk, read_inputs
from lossdial.train import train

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
PIL = pytest.importorskip("PIL.Image")
runner = CliRunner()

TINY = ["train.epochs=2", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8"]
LIMIT_MB = 0.25
LIMIT = int(LIMIT_MB * 2**20)
SRC = str(Path(__file__).resolve().parents[1] / "src")


class Server:
    """`lossdial serve RUN --port 0` in a subprocess; the URL is read from its start line."""

    def __init__(self, run: Path, *extra: str):
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "lossdial", "serve", str(run), "--port", "0",
                                      "--device", "cpu", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        threading.Thread(target=lambda: [self.stderr.append(x) for x in self.proc.stderr], daemon=True).start()
        deadline = time.monotonic() + 120
        self.url = None
        while self.url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError(f"no start line from lossdial serve: {''.join(self.stderr)}") from None
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.url, self.port = m.group(0), int(m.group(1))
        self.start_line = line
        while True:  # the socket is bound before the start line; wait until the app answers
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise AssertionError(f"lossdial serve did not answer /health: {''.join(self.stderr)}")
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def score(self, body):
        return self.client.post("/score", json=body)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class InProcess:
    """The same application without a process or socket (starlette's TestClient), for the multi-class and
    table runs: what is specific to them lives in the request handling, not in the HTTP transport."""

    def __init__(self, loaded):
        import warnings

        with warnings.catch_warnings():  # starlette 1.x: "Using `httpx` with starlette.testclient is deprecated"
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient

        from lossdial.serve.app import create_app
        from lossdial.serve.service import Service

        self.client = TestClient(create_app(Service(loaded), max_body_bytes=LIMIT))

    def score(self, body):
        return self.client.post("/score", json=body)


def _add_point(run, name, entry, **more):
    """A model card with these points, written directly (pick's metrics are not needed to serve them)."""
    (Path(run) / "model_card.json").write_text(json.dumps({"format_version": 1, "points": {name: entry, **more}}))


def _pick(run, *args):
    r = runner.invoke(app, ["pick", str(run), "--n-boot", "20", "--device", "cpu", *args])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """An LCT run (VS over tau) on digits, its card points `screening` and `alerting`, and its server."""
    root = tmp_path_factory.mktemp("serve_bin")
    train(load_config(packaged_config_path("demo_digits"), TINY), root / "run", device="cpu")
    _pick(root / "run", "--at", "recall>=0.8", "--name", "screening")
    _pick(root / "run", "--maximize", "f1", "--name", "alerting")
    server = Server(root / "run", "--max-body-mb", str(LIMIT_MB))
    loaded = load_run(root / "run")
    yield server, loaded, root
    server.close()


@pytest.fixture(scope="module")
def val_x(binary):
    """Validation images of the binary run, float32 [N, 1, 8, 8] in [0, 1]."""
    return load_run(binary[2] / "run").task().val.x[:40].numpy()


def _card(run):
    return json.loads((Path(run) / "model_card.json").read_text())["points"]


def _predicted(loaded, tmp, x, point):
    """`lossdial predict`'s answer: the inputs through an .npz and read_inputs, then predict at the point."""
    np.savez(tmp / "in.npz", x=x)
    ids, xs, _ = read_inputs(tmp / "in.npz", loaded.data)
    op = operating_point(loaded, _card(loaded.path)[point], name=point) if isinstance(point, str) else \
        operating_point(loaded, lam=point.get("lambda"), threshold=point.get("threshold"),
                        adjustment=point.get("adjustment"))
    if op.adjustment is not None:
        return ids, class_probabilities(loaded, xs, op.lam, op.adjustment), op
    return ids, predict(loaded, xs, op.lam, op.threshold)[0], op


def _logits_by_hand(loaded, x, lam):
    """The logits outside the scoring code: normalise with data.json's mean/std, one full forward at lambda."""
    norm = loaded.data["normalization"]
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean, std = torch.tensor(norm["mean"]).view(shape), torch.tensor(norm["std"]).view(shape)
    xn = (torch.as_tensor(x).float() - mean) / std
    z = None
    if lam is not None:  # the support [lo, hi] mapped linearly to [-1, 1] (lct.normalize, linear distributions)
        lo, hi = json.loads((Path(loaded.path) / "lambda_space.json").read_text())["supports"]["tau"]
        z = torch.tensor([[2 * (lam["tau"] - lo) / (hi - lo) - 1]])
    with torch.no_grad():
        return loaded.model(xn, None if z is None else z.expand(len(xn), -1)).double()


# --------------------------------------------------------------------------------------------------------
# the endpoints

def test_health_and_points_describe_the_run_and_its_card(binary):
    server, loaded, root = binary
    h = server.client.get("/health").json()
    assert h["status"] == "ok" and h["task"] == "binary" and h["lct"] is True
    assert h["inputs"]["shape"] == [1, 8, 8] and h["inputs"]["value_range"] == [0.0, 1.0]
    assert h["max_body_bytes"] == LIMIT
    p = server.client.get("/points").json()
    card = _card(root / "run")
    assert set(p["points"]) == {"screening", "alerting"}
    for name in ("screening", "alerting"):
        assert p["points"][name]["lambda"] == card[name]["lambda"]
        assert p["points"][name]["threshold"] == card[name]["threshold"]
        assert p["points"][name]["val"]["recall"] == card[name]["val"]["recall"]
    assert p["lambda_support"] == {"tau": [0.0, 3.0]} and p["dial"] == "threshold"
    assert "screening, alerting" in server.start_line


def test_dial_page_is_the_report_of_the_run(binary):
    server, _, _ = binary
    for _ in range(3):  # built in the background at start; GET / waits up to 60 s, then says "still being built"
        r = server.client.get("/")
        if r.status_code != 503 or "still being built" not in r.text:
            break
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text.count("data:image/png;base64,") >= 3  # the report's figures, embedded


def test_one_point_equals_predict_and_a_forward_by_hand(binary, val_x, tmp_path):
    server, loaded, _ = binary
    r = server.score({"inputs": val_x.tolist(), "point": "screening"})
    assert r.status_code == 200, r.text
    got = r.json()
    ids, expect, op = _predicted(loaded, tmp_path, val_x, "screening")
    assert got["ids"] == ids and got["point"] == "screening"
    assert got["lambda"] == op.lam and got["threshold"] == op.threshold
    np.testing.assert_allclose(got["scores"], expect, rtol=0, atol=1e-6)
    by_hand = torch.softmax(_logits_by_hand(loaded, val_x, op.lam), 1)[:, 1].numpy()
    np.testing.assert_allclose(got["scores"], by_hand, rtol=0, atol=1e-5)
    assert got["decisions"] == [int(s >= op.threshold) for s in got["scores"]]
    assert 0 < sum(got["decisions"]) < len(ids) or op.threshold in (0, 1)


def test_several_points_each_equal_predict(binary, val_x, tmp_path):
    server, loaded, _ = binary
    explicit = {"lambda": {"tau": 0.7}, "threshold": 0.35}
    r = server.score({"inputs": val_x.tolist(), "points": ["alerting", explicit, "screening"]})
    assert r.status_code == 200, r.text
    got = r.json()
    assert [res.get("point") for res in got["results"]] == ["alerting", None, "screening"]
    for res, point in zip(got["results"], ["alerting", explicit, "screening"]):
        _, expect, op = _predicted(loaded, tmp_path, val_x, point)
        np.testing.assert_allclose(res["scores"], expect, rtol=0, atol=1e-6)
        assert res["lambda"] == op.lam and res["threshold"] == op.threshold
        assert res["decisions"] == [int(s >= op.threshold) for s in res["scores"]]
    # the explicit point given on its own: the same answer
    one = server.score({"inputs": val_x.tolist(), **explicit}).json()
    assert one["scores"] == got["results"][1]["scores"] and "results" not in one


def test_images_as_hw_and_hwc_arrays_and_integer_json_read_as_the_run_s_floats(binary, val_x):
    server, _, _ = binary
    base = server.score({"inputs": val_x[:5].tolist(), "point": "screening"}).json()["scores"]
    hw = server.score({"inputs": val_x[:5, 0].tolist(), "point": "screening"}).json()["scores"]
    hwc = server.score({"inputs": val_x[:5].transpose(0, 2, 3, 1).tolist(), "point": "screening"}).json()["scores"]
    assert hw == base and hwc == base
    zeros_int = server.score({"inputs": [[[0] * 8] * 8], "point": "screening"})  # 0 for 0.0: JSON's own ambiguity
    zeros_float = server.score({"inputs": [[[0.0] * 8] * 8], "point": "screening"})
    assert zeros_int.status_code == 200 and zeros_int.json()["scores"] == zeros_float.json()["scores"]


def test_multipart_image_upload_equals_predict_on_the_same_files(binary, val_x, tmp_path):
    server, loaded, _ = binary
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        PIL.fromarray((val_x[i, 0] * 255).round().astype(np.uint8)).save(folder / f"im{i}.png")
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted(folder.iterdir())]
    r = server.client.post("/score", files=files, data={"point": "alerting"})
    assert r.status_code == 200, r.text
    ids, x, _ = read_inputs(folder, loaded.data)
    op = operating_point(loaded, _card(loaded.path)["alerting"], name="alerting")
    assert r.json()["ids"] == ids == ["im0.png", "im1.png", "im2.png", "im3.png"]
    np.testing.assert_allclose(r.json()["scores"], predict(loaded, x, op.lam, op.threshold)[0], rtol=0, atol=1e-6)
    # several points and an explicit lambda as form fields
    r = server.client.post("/score", files=files, data={"points": json.dumps(["alerting", {"lambda": {"tau": 2},
                                                                                         "threshold": 0.5}])})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["scores"] == server.client.post("/score", files=files, data={
        "point": "alerting"}).json()["scores"]
    r2 = server.client.post("/score", files=files, data={"lambda": '{"tau": 2}', "threshold": "0.5"})
    assert r2.json()["scores"] == r.json()["results"][1]["scores"]
    # an .npz upload reads like predict's .npz input
    np.savez(tmp_path / "in.npz", x=val_x[:6])
    r = server.client.post("/score", files=[("files", ("in.npz", (tmp_path / "in.npz").read_bytes()))],
                           data={"point": "screening"})
    assert r.json()["scores"] == server.score({"inputs": val_x[:6].tolist(), "point": "screening"}).json()["scores"]


def test_all_points_of_a_request_share_one_backbone_pass(binary, val_x):
    from lossdial.serve.service import Service

    _, loaded, _ = binary
    service = Service(loaded)
    calls = {"backbone": 0, "head": 0}
    h1 = loaded.model.backbone.register_forward_hook(lambda *a: calls.__setitem__("backbone", calls["backbone"] + 1))
    h2 = loaded.model.fc.register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    try:
        body = {"inputs": val_x[:20].tolist(), "points": ["screening", "alerting", {"lambda": {"tau": 0.1},
                                                                                   "threshold": 0.5}]}
        out = service.score(service.json_job(json.dumps(body).encode()))
    finally:
        h1.remove()
        h2.remove()
    assert len(out["results"]) == 3
    card = _card(loaded.path)
    distinct = {card["screening"]["lambda"]["tau"], card["alerting"]["lambda"]["tau"], 0.1}
    assert calls == {"backbone": 1, "head": len(distinct)}  # a head pass per distinct lambda


# --------------------------------------------------------------------------------------------------------
# bad requests: 4xx naming the problem, never a score

def _img(v=0.5):
    return [[[v] * 8] * 8]


BAD_JSON = [
    ({"inputs": [[1.0, 2.0]], "point": "screening"}, "trained on 8x8 grayscale images"),
    ({"inputs": [[[0.5] * 4] * 4], "point": "screening"}, "holds 4x4 grayscale images"),
    ({"inputs": [[[1.0] * 8] * 8, [[1.0] * 8] * 7], "point": "screening"}, "nested lists of different lengths"),
    ({"inputs": [[["a"] * 8] * 8], "point": "screening"}, "other than numbers"),
    ({"inputs": [[[None] * 8] * 8], "point": "screening"}, "other than numbers"),
    ({"inputs": [[[True] * 8] * 8], "point": "screening"}, "true/false"),
    ({"inputs": [[[200.0] * 8] * 8], "point": "screening"}, "divide by 255"),
    ({"inputs": [_img(-3.0)], "point": "screening"}, "the run was trained on floats in [0, 1]"),
    ({"inputs": [], "point": "screening"}, "'inputs' must be a non-empty list"),
    ({"inputs": [0.5, 0.5], "point": "screening"}, "one sample per row"),
    ({"inputs": [_img()], "point": "nope"}, "unknown point 'nope'; the model card's points are ['alerting', "
                                            "'screening']"),
    ({"inputs": [_img()], "point": 3}, "point must be a point name"),
    ({"inputs": [_img()], "lambda": {"tau": 5.0}, "threshold": 0.5}, "tau=5 is outside the training support [0, 3]"),
    ({"inputs": [_img()], "points": ["screening", {"lambda": {"tau": -1}, "threshold": 0.5}]},
     "points[1].lambda: tau=-1 is outside the training support"),
    ({"inputs": [_img()], "lambda": {}, "threshold": 0.5}, "lambda lacks ['tau']"),
    ({"inputs": [_img()], "lambda": {"tau": 1, "beta": 2}, "threshold": 0.5}, "has unknown names ['beta']"),
    ({"inputs": [_img()], "lambda": 1.0, "threshold": 0.5}, "lambda must be an object"),
    ({"inputs": [_img()], "lambda": {"tau": "1"}, "threshold": 0.5}, "lambda.tau must be a number"),
    ({"inputs": [_img()], "lambda": {"tau": 1}}, "lacks 'threshold'"),
    ({"inputs": [_img()], "threshold": 0.5}, "lacks 'lambda': this is an LCT run"),
    ({"inputs": [_img()], "lambda": {"tau": 1}, "threshold": 1.5}, "threshold must lie in [0, 1]"),
    ({"inputs": [_img()], "lambda": {"tau": 1}, "threshold": "0.5"}, "threshold must be a number"),
    ({"inputs": [_img()], "lambda": {"tau": 1}, "adjustment": 1.0}, "applies to multi-class runs"),
    ({"inputs": [_img()]}, "missing the operating point"),
    ({"point": "screening"}, "missing field 'inputs'"),
    ({"inputs": [_img()], "point": "screening", "points": ["alerting"]}, "give one of 'point', 'points'"),
    ({"inputs": [_img()], "points": []}, "'points' must be a non-empty list"),
    ({"inputs": [_img()], "points": ["screening"] * 65}, "at most 64 per request"),
    ({"inputs": [_img()], "point": "screening", "top_k": 3}, "unknown field(s) ['top_k']"),
    ([_img()], "the body must be a JSON object"),
]


@pytest.mark.parametrize("body, message", BAD_JSON, ids=[m[:30] for _, m in BAD_JSON])
def test_bad_json_requests_get_422_naming_the_problem(binary, body, message):
    server, _, _ = binary
    r = server.score(body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert "scores" not in r.text


@pytest.mark.parametrize("content, ctype, status, message", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"inputs": [[[NaN, 0.5]]]}', "application/json", 422, "missing the operating point"),
    (json.dumps({"inputs": [[[float("nan")] * 8] * 8], "point": "screening"}).encode(), "application/json", 422,
     "NaN or infinite"),
    (b"[" * 100000 + b"]" * 100000, "application/json", 400, "nested too deeply"),
    (b"inputs=1", "text/plain", 415, "application/json"),
    (b"\xff\xfe", "application/json", 400, "not valid JSON"),
])
def test_malformed_bodies_get_4xx(binary, content, ctype, status, message):
    server, _, _ = binary
    r = server.client.post("/score", content=content, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"] and "scores" not in r.text


FORM = "multipart/form-data; boundary=b"


def _form(fields):
    """A multipart body of text fields only (httpx sends url-encoded forms when there are no files)."""
    parts = [f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + "--b--\r\n").encode()


def test_bad_multipart_requests_get_422(binary, tmp_path):
    server, _, _ = binary
    png = tmp_path / "a.png"
    PIL.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    big = tmp_path / "big.png"
    PIL.fromarray(np.zeros((10, 12), np.uint8)).save(big)
    cases = [
        ([("files", ("a.txt", b"x"))], {"point": "screening"}, "give image files"),
        ([("files", ("a.csv", b"x\n1")), ("files", ("b.csv", b"x\n1"))], {"point": "screening"}, "one table file"),
        ([("files", ("a.png", png.read_bytes())), ("files", ("a.png", png.read_bytes()))], {"point": "screening"},
         "repeated: ['a.png']"),
        ([("upload", ("a.png", png.read_bytes()))], {"point": "screening"}, "under the form field 'files'"),
        ([], {"point": "screening", "x": "1"}, "unknown form field(s) ['x']"),
        ([("files", ("a.png", png.read_bytes()))], {"point": "nope"}, "unknown point 'nope'"),
        ([("files", ("a.png", png.read_bytes()))], {"lambda": "tau=1", "threshold": "0.5"}, "'lambda' must be JSON"),
        ([("files", ("a.png", png.read_bytes()))], {"lambda": '{"tau": 1}', "threshold": "high"},
         "'threshold' must be a number"),
        ([("files", ("big.png", big.read_bytes()))], {"point": "screening"}, "big.png is 12x10"),
        ([("files", ("c.png", b"not a png"))], {"point": "screening"}, "cannot read image c.png"),
        ([("files", ("a.csv", b"x\n1"))], {"point": "screening"}, "the run was trained on image data"),
    ]
    for files, data, message in cases:
        if files:
            r = server.client.post("/score", files=files, data=data)
        else:  # a form without files
            r = server.client.post("/score", content=_form(data), headers={"content-type": FORM})
        assert r.status_code == 422, (message, r.text)
        assert message in r.json()["detail"], (message, r.json())
        assert "scores" not in r.text
    r = server.client.post("/score", content=_form({"point": "screening"}), headers={"content-type": FORM})
    assert r.status_code == 422 and "missing the inputs" in r.json()["detail"]


def test_unknown_routes_and_methods(binary):
    server, _, _ = binary
    assert server.client.get("/score").status_code == 405
    assert server.client.post("/points").status_code == 405
    assert server.client.get("/nope").status_code == 404


def _raw(port: int, head: bytes, chunks=(), wait: float = 10.0) -> bytes:
    """Send a request head (and body chunks) over a plain socket without finishing the body; the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head)
        for c in chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        out = b""
        try:
            while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
                got = s.recv(65536)
                if not got:
                    break
                out += got
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def test_a_declared_length_over_the_limit_gets_413_before_any_body(binary):
    server, _, _ = binary
    head = (f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**9}\r\n\r\n").encode()
    reply = _raw(server.port, head)  # not one body byte sent
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert f"over the limit of {LIMIT} bytes".encode() in reply and b"scores" not in reply
    assert server.client.get("/health").status_code == 200


def test_a_chunked_body_over_the_limit_gets_413_before_it_ends(binary):
    server, _, _ = binary
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"[" + b"0," * 8000 + b"0]"
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    n = LIMIT // len(piece) + 2  # just past the limit; the terminating 0-chunk is never sent
    t0 = time.monotonic()
    reply = _raw(server.port, head, [chunk] * n)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"more than" in reply and time.monotonic() - t0 < 8  # answered, not waiting for the body's end
    # a chunked body within the limit is read and scored
    body = json.dumps({"inputs": [_img()], "point": "screening"}).encode()
    ok = _raw(server.port, head, [f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"])
    assert ok.startswith(b"HTTP/1.1 200") and b'"scores"' in ok


def test_a_body_just_over_the_limit_is_refused_and_just_under_is_read(binary):
    server, _, _ = binary
    body = json.dumps({"inputs": [_img()], "point": "screening"}).encode()
    pad = b" " * (LIMIT - len(body))
    assert server.client.post("/score", content=body + pad, headers={"content-type": "application/json"}
                              ).status_code == 200
    r = server.client.post("/score", content=body + pad + b" ", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]


# --------------------------------------------------------------------------------------------------------
# a multi-class run

@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_mc")
    cfg = load_config(packaged_config_path("demo_digits_lt"), TINY)
    train(cfg, root / "run", device="cpu")
    _add_point(root / "run", "balanced", {"lambda": {"tau": 0.5}, "adjustment": 1.0, "objective": "balanced_accuracy"},
               old={"lambda": {"tau": 0.5}, "threshold": 0.5})  # a binary-style entry: no adjustment
    loaded = load_run(root / "run")
    return InProcess(loaded), loaded, loaded.task().val.x[:30].numpy()


def test_multiclass_scores_equal_predict_at_each_point(multiclass, tmp_path):
    server, loaded, x = multiclass
    explicit = {"lambda": {"tau": 1.2}, "adjustment": 0.4}
    r = server.score({"inputs": x.tolist(), "points": ["balanced", explicit]})
    assert r.status_code == 200, r.text
    got = r.json()
    names = loaded.data["class_names"]
    assert got["classes"] == names
    for res, point in zip(got["results"], ["balanced", explicit]):
        ids, probs, op = _predicted(loaded, tmp_path, x, point)
        assert res["lambda"] == op.lam and res["adjustment"] == op.adjustment
        np.testing.assert_allclose(res["scores"], probs, rtol=0, atol=1e-6)
        top1 = predict_topk(loaded, torch.from_numpy(x), op.lam, op.adjustment, k=1).classes[:, 0]
        assert res["decisions"] == [names[c] for c in top1]
        # by hand: softmax(z_c - t log pi_c)
        z = _logits_by_hand(loaded, x, op.lam).numpy()
        pi = np.array(loaded.train_counts) / sum(loaded.train_counts)
        s = z - op.adjustment * np.log(pi)
        by_hand = np.exp(s - s.max(1, keepdims=True))
        np.testing.assert_allclose(res["scores"], by_hand / by_hand.sum(1, keepdims=True), rtol=0, atol=1e-5)
    one = server.score({"inputs": x.tolist(), "point": "balanced"}).json()
    assert one["scores"] == got["results"][0]["scores"] and one["point"] == "balanced"
    p = server.client.get("/points").json()
    assert p["dial"] == "adjustment" and p["points"]["balanced"]["adjustment"] == 1.0
    assert "has no 'adjustment'" in p["unusable"]["old"] and "old" not in p["points"]
    r = server.score({"inputs": x[:2].tolist(), "point": "old"})
    assert r.status_code == 422 and "model card point 'old' cannot be used" in r.json()["detail"]
    r = server.client.get("/")  # created without a page
    assert r.status_code == 404 and "--no-page" in r.json()["detail"]


@pytest.mark.parametrize("extra, message", [
    ({"lambda": {"tau": 1}, "threshold": 0.5}, "a threshold on P(positive) applies to binary runs"),
    ({"lambda": {"tau": 1}}, "lacks 'adjustment'"),
    ({"lambda": {"tau": 9}, "adjustment": 1}, "outside the training support"),
    ({"lambda": {"tau": 1}, "adjustment": None}, "adjustment must be a number"),
])
def test_multiclass_bad_points(multiclass, extra, message):
    server, _, x = multiclass
    r = server.score({"inputs": x[:2].tolist(), **extra})
    assert r.status_code == 422 and message in r.json()["detail"], r.text


# --------------------------------------------------------------------------------------------------------
# a CSV table run (records with the training column names, rows, CSV upload)

def _csv(path, n=240, seed=0):
    rng = np.random.default_rng(seed)
    rows = ["id,age,city,income,label"]
    for i in range(n):
        age = "" if i % 17 == 0 else f"{rng.normal(40, 10):.1f}"
        city = "" if i % 23 == 0 else ["paris", "london", "berlin"][i % 3]
        rows.append(f"r{i},{age},{city},{rng.normal(100, 20):.2f},{'fraud' if i % 4 == 0 else 'ok'}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_tab")
    _csv(root / "t.csv")
    ov = TINY[:-1] + ["data.source=csv", f"data.path={root / 't.csv'}", "data.target=label", "data.id_column=id",
                      "data.positive_class=fraud", "data.beta=5", "data.min_holdout_positives=5",
                      "model.backbone=mlp", "model.backbone_kwargs={hidden: [16]}", "train.augment=none",
                      "lct.enabled=false"]
    train(load_config(packaged_config_path("demo_digits"), ov), root / "run", device="cpu")
    _add_point(root / "run", "best", {"lambda": {}, "threshold": 0.4})
    loaded = load_run(root / "run")
    return InProcess(loaded), loaded, root


RECORDS = [{"age": 35.5, "city": "paris", "income": 90.0}, {"age": None, "city": "london", "income": 120.5},
           {"age": 51, "city": None, "income": "101.25"}, {"age": 44.0, "city": "berlin", "income": 77}]


def test_table_records_rows_and_csv_upload_equal_predict(table, tmp_path):
    server, loaded, _ = table
    csv = tmp_path / "in.csv"
    csv.write_text("id,age,city,income\n" + "\n".join(
        f"q{i},{'' if r['age'] is None else r['age']},{r['city'] or ''},{r['income']}" for i, r in enumerate(RECORDS))
        + "\n")
    ids, x, _ = read_inputs(csv, loaded.data)
    op = operating_point(loaded, _card(loaded.path)["best"], name="best")
    expect = predict(loaded, x, op.lam, op.threshold)[0]
    by_records = server.score({"inputs": RECORDS, "point": "best"})
    assert by_records.status_code == 200, by_records.text
    np.testing.assert_allclose(by_records.json()["scores"], expect, rtol=0, atol=1e-6)
    rows = [[r["age"], r["city"], r["income"]] for r in RECORDS]
    assert server.score({"inputs": rows, "point": "best"}).json()["scores"] == by_records.json()["scores"]
    shuffled = [{k: r[k] for k in ("income", "city", "age")} for r in RECORDS]  # records: any key order
    assert server.score({"inputs": shuffled, "point": "best"}).json()["scores"] == by_records.json()["scores"]
    up = server.client.post("/score", files=[("files", ("in.csv", csv.read_bytes(), "text/csv"))],
                            data={"point": "best"})
    assert up.status_code == 200, up.text
    assert up.json()["ids"] == ids == ["q0", "q1", "q2", "q3"]
    np.testing.assert_allclose(up.json()["scores"], expect, rtol=0, atol=1e-6)
    # a baseline's explicit point is its threshold alone
    r = server.score({"inputs": RECORDS, "threshold": 0.25})
    assert r.json()["lambda"] is None and r.json()["decisions"] == [int(s >= 0.25) for s in expect]


@pytest.mark.parametrize("inputs, extra, message", [
    ([{"age": 30, "city": "paris"}], {}, "lacks columns ['income']"),
    ([{"age": 30, "city": "paris", "income": 1, "zip": 2}], {}, "has columns ['zip'] the run was not trained on"),
    ([{"age": "old", "city": "paris", "income": 100}], {}, "numeric in training but row 1 holds 'old'"),
    ([{"age": 1e6, "city": "paris", "income": 100}], {}, "column 'age' has 1 value(s) far outside"),
    ([[30, "paris"]], {}, "inputs[0] has 2 values but the run was trained on 3 columns"),
    ([{"age": 30, "city": "paris", "income": 1}, {"age": 30, "city": "paris"}], {}, "inputs[1] has the fields"),
    ([{"age": [30], "city": "paris", "income": 1}], {}, "a table value is a number, a string or null"),
    ([{"age": 30, "city": "paris", "income": 1}, [30, "paris", 1]], {}, "mixes them"),
    ([[30, "paris", 1]], {"lambda": {"tau": 1}}, "this run is a baseline"),
])
def test_table_bad_requests(table, inputs, extra, message):
    server, _, _ = table
    body = {"inputs": inputs, **({"threshold": 0.5} if not extra else {"threshold": 0.5, **extra})}
    r = server.score(body)
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_serve_command_errors_name_the_flag(binary):
    _, _, root = binary
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = runner.invoke(app, ["serve", str(root / "run"), "--port", str(busy.getsockname()[1]), "--device", "cpu"])
    assert r.exit_code == 2 and "cannot listen on 127.0.0.1:" in r.output and "--port" in r.output
    r = runner.invoke(app, ["serve", str(root / "run"), "--max-body-mb", "0"])
    assert r.exit_code == 2 and "--max-body-mb must be a number > 0" in r.output
    r = runner.invoke(app, ["serve", str(root / "nope")])
    assert r.exit_code == 2 and "nope" in r.output


# --------------------------------------------------------------------------------------------------------
# without the serve extra

def test_the_package_imports_without_the_serve_extra_and_serve_names_the_fix(monkeypatch):
    import importlib

    for m in ("fastapi", "uvicorn", "multipart", "python_multipart", "starlette"):
        monkeypatch.setitem(sys.modules, m, None)  # import m raises ImportError; find_spec(m) is None
    for m in [m for m in sys.modules if m == "lossdial.serve" or m.startswith("lossdial.serve.")]:
        monkeypatch.delitem(sys.modules, m)  # executed afresh below, without the extra
    for m in ("lossdial.serve", "lossdial.serve.service", "lossdial.serve.limit", "lossdial.serve.page",
              "lossdial.serve.app"):
        importlib.import_module(m)
    with pytest.raises(ImportError, match=r"needs fastapi, uvicorn, python-multipart: pip install 'lossdial\[serve\]'"):
        sys.modules["lossdial.serve.app"].create_app(None)
    r = runner.invoke(app, ["serve", "no_such_run"])
    assert r.exit_code == 2
    assert "pip install 'lossdial[serve]'" in r.output and "fastapi, uvicorn, python-multipart" in r.output


# --------------------------------------------------------------------------------------------------------
# a run trained on uint8 pixels: JSON numbers read as the run's integers

def test_uint8_run_reads_whole_json_numbers_as_its_pixels(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0] * 48 + [1] * 16)
    x = np.clip(rng.normal(np.where(y == 1, 170, 70)[:, None, None], 40, (64, 6, 6)), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(["neg", "pos"]))
    ov = TINY + ["data.source=npz", f"data.path={tmp_path / 'd.npz'}", "data.positive_class='pos'", "data.beta=null",
                 "data.val_fraction=0.25", "data.test_fraction=0.25", "data.min_holdout_positives=3",
                 "train.augment=none", "lct.enabled=false"]
    train(load_config(packaged_config_path("demo_digits"), ov), tmp_path / "run", device="cpu")
    loaded = load_run(tmp_path / "run")
    assert loaded.data["raw_input"]["dtype"] == "uint8"
    server = InProcess(loaded)
    new = rng.integers(0, 256, (5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", x=new)
    _, xs, _ = read_inputs(tmp_path / "in.npz", loaded.data)
    expect = predict(loaded, xs, None, 0.5)[0]
    as_ints = server.score({"inputs": new.tolist(), "threshold": 0.5})
    assert as_ints.status_code == 200, as_ints.text
    np.testing.assert_allclose(as_ints.json()["scores"], expect, rtol=0, atol=1e-6)
    as_floats = server.score({"inputs": new.astype(float).tolist(), "threshold": 0.5})  # 17.0 for 17
    assert as_floats.json()["scores"] == as_ints.json()["scores"]
    r = server.score({"inputs": (new / 255).tolist(), "threshold": 0.5})
    assert r.status_code == 422 and "multiply by 255 and round to integers" in r.json()["detail"]
    r = server.score({"inputs": (new.astype(int) + 300).tolist(), "threshold": 0.5})
    assert r.status_code == 422 and "but the run was trained on uint8" in r.json()["detail"]
