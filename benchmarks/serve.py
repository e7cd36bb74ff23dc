"""Benchmark: `lossdial serve` under load on loopback -- requests/s and p50/p99 latency.

    python benchmarks/serve.py [--run RUN] [--requests 300] [--seconds 30] [--inputs 8]

Starts `lossdial serve RUN --port 0 --no-page --device cpu` as a subprocess on 127.0.0.1 (nothing else is
contacted), then for 1 and 16 concurrent clients (threads, one keep-alive connection each) and 1 and 8 operating
points per request sends POST /score requests, each with ``--inputs`` validation images as JSON arrays, until
``--requests`` requests are done or ``--seconds`` have passed (whichever is first; per cell), in ``--rounds``
rounds that interleave the four cells, so that a change in the machine's load during the run hits all of them. The 8 points are
explicit (lambda spread over the trained support, thresholds / adjustments spread too), so they need distinct
head passes; the 1-point requests use the first of them.

Every answer is checked against `lossdial predict`'s library path on the same inputs and point (read_inputs of
an .npz, then predict / class_probabilities; scores within 1e-6, decisions equal): the table counts mismatches
and failed requests (transport errors, non-200), both must be 0. Without --run, a small digits LCT run is trained
first (demo_digits, 3 epochs, the shipped width). The machine's CPU may be shared with other work: the figures
are for this machine at this time, side by side in one run.

Writes benchmarks/results/serve_cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402

from lossdial.evaluate import load_run  # noqa: E402
from lossdial.predict import class_probabilities, operating_point, predict, read_inputs  # noqa: E402

N_BATCHES = 16  # distinct input batches the requests cycle through (expected answers precomputed for each)


def _train_run(out: Path) -> Path:
    from lossdial.config import load_config, packaged_config_path
    from lossdial.train import train

    cfg = load_config(packaged_config_path("demo_digits"), ["train.epochs=3", "train.eval_every=0",
                                                            "schedule.warmup_epochs=0"])
    train(cfg, out, device="cpu")
    return out


def _start_server(run: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lossdial", "serve", str(run), "--host", "127.0.0.1", "--port", "0",
                             "--no-page", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 180
    url = None
    while url is None:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        m = re.search(r"http://127\.0\.0\.1:\d+", line)
        url = m.group(0) if m else None
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"lossdial serve did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
        time.sleep(0.2)


def _points(loaded, k: int = 8) -> list[dict]:
    """k explicit points: lambda spread over the support, the dial spread over a useful range."""
    multiclass = loaded.task_type.name == "multiclass"
    out = []
    for j in range(k):
        f = (j + 0.5) / k
        p: dict = {}
        if loaded.is_lct:
            p["lambda"] = {n: round(lo + f * (hi - lo), 6) for n, (lo, hi) in loaded.space.supports.items()}
        p["adjustment" if multiclass else "threshold"] = round(2 * f if multiclass else 0.1 + 0.8 * f, 6)
        out.append(p)
    return out


def _expected(loaded, x: np.ndarray, point: dict, tmp: Path):
    """predict's answer: the inputs through an .npz and read_inputs, then predict / class_probabilities."""
    np.savez(tmp / "in.npz", x=x)
    _, xs, _ = read_inputs(tmp / "in.npz", loaded.data)
    op = operating_point(loaded, lam=point.get("lambda"), threshold=point.get("threshold"),
                         adjustment=point.get("adjustment"))
    if op.adjustment is not None:
        probs = class_probabilities(loaded, xs, op.lam, op.adjustment)
        names = loaded.data["class_names"]
        return probs, [names[int(c)] for c in probs.argmax(1)]
    s, d = predict(loaded, xs, op.lam, op.threshold)
    return s, d.tolist()


def _matches(result: dict, expect) -> bool:
    scores, decisions = expect
    got = np.asarray(result["scores"])
    return got.shape == scores.shape and bool(np.abs(got - scores).max() <= 1e-6) and result["decisions"] == decisions


def _cell(conns: list, bodies: list[bytes], expects: list[list], n_requests: int, seconds: float) -> dict:
    """Send requests from one thread per connection in `conns` (httpx.Client, kept open between cells) until
    n_requests are done or `seconds` passed; latencies and checks."""
    lock = threading.Lock()
    state = {"next": 0, "lat": [], "failed": 0, "mismatch": 0, "errors": []}
    t_end = time.monotonic() + seconds

    def worker(c):
        while True:
            with lock:
                i = state["next"]
                if i >= n_requests or time.monotonic() > t_end:
                    return
                state["next"] += 1
            b = i % len(bodies)
            t0 = time.perf_counter()
            try:
                r = c.post("/score", content=bodies[b])
                dt = time.perf_counter() - t0
                ok = r.status_code == 200
                ans = r.json() if ok else None
            except httpx.HTTPError as exc:
                dt, ok, ans = time.perf_counter() - t0, False, None
                with lock:
                    state["errors"].append(repr(exc)[:200])
            results = ([] if ans is None else ans.get("results", [ans]))
            good = ok and len(results) == len(expects[b]) and all(
                _matches(res, e) for res, e in zip(results, expects[b]))
            with lock:
                state["lat"].append(dt)
                state["failed"] += not ok
                state["mismatch"] += ok and not good

    t0, c0 = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    client_cpu = time.process_time() - c0
    return {"lat": state["lat"], "seconds": wall, "failed": state["failed"], "mismatched": state["mismatch"],
            "errors": state["errors"][:3], "client_cpu_s": client_cpu}


def _summary(parts: list[dict]) -> dict:
    """One cell from its rounds: requests/s over the summed wall time, percentiles over all latencies."""
    lat = sorted(x for p in parts for x in p["lat"])
    wall = sum(p["seconds"] for p in parts)
    return {"requests": len(lat), "seconds": wall, "rps": len(lat) / wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "failed": sum(p["failed"] for p in parts), "mismatched": sum(p["mismatched"] for p in parts),
            "errors": [e for p in parts for e in p["errors"]][:3],
            "client_cpu_s": sum(p["client_cpu_s"] for p in parts)}


def _versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "fastapi", "uvicorn", "starlette", "httpx", "numpy"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            out[pkg] = "?"
    try:
        out["lossdial_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                capture_output=True, text=True).stdout.strip()
    except OSError:
        out["lossdial_commit"] = "?"
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=300, help="requests per cell (at most)")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds per cell (at most)")
    ap.add_argument("--inputs", type=int, default=8, help="inputs per request")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over the four cells, interleaved")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_cpu")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lossdial-bench-serve-") as tmp:
        tmp = Path(tmp)
        run = args.run or _train_run(tmp / "run")
        loaded = load_run(run)
        x_all = loaded.task().val.x.numpy()
        points = _points(loaded, 8)
        batches = [x_all[(i * args.inputs) % len(x_all):][:args.inputs] for i in range(N_BATCHES)]
        batches = [b if len(b) == args.inputs else x_all[:args.inputs] for b in batches]
        proc, url = _start_server(run)
        rows = []
        try:
            cells = {}  # (clients, points) -> (bodies, expects)
            for n_points in (1, 8):
                pts = points[:n_points]
                bodies, expects = [], []
                for b in batches:
                    body = {"inputs": b.tolist(), **(pts[0] if n_points == 1 else {"points": pts})}
                    bodies.append(json.dumps(body).encode())
                    expects.append([_expected(loaded, b, p, tmp) for p in pts])
                for clients in (1, 16):
                    cells[clients, n_points] = (bodies, expects)
            conns = [httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"})
                     for _ in range(16)]  # keep-alive connections, opened once: 1 client uses the first
            for (clients, _), (bodies, expects) in cells.items():  # warm-up: connections, first passes
                _cell(conns[:clients], bodies, expects, 2 * clients, 10)
            parts: dict = {k: [] for k in cells}
            for _ in range(args.rounds):  # the cells interleaved, so a change in the machine's load hits all
                for k, (bodies, expects) in cells.items():
                    parts[k].append(_cell(conns[:k[0]], bodies, expects, args.requests // args.rounds,
                                          args.seconds / args.rounds))
            for c in conns:
                c.close()
            for (clients, n_points), got in parts.items():
                r = _summary(got)
                r.update(clients=clients, points=n_points)
                rows.append(r)
                print(f"{clients:>2} clients, {n_points} point(s): {r['rps']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, {r['requests']} requests, {r['failed']} failed, "
                      f"{r['mismatched']} mismatched; client CPU {r['client_cpu_s']:.1f} s of {r['seconds']:.1f} s",
                      flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(),
            "versions": _versions(), "run": "given: " + str(args.run) if args.run else
            "digits LCT (demo_digits, small_cnn width 32, 3 epochs), trained by the benchmark",
            "inputs_per_request": args.inputs, "max_requests_per_cell": args.requests, "rounds": args.rounds,
            "max_seconds_per_cell": args.seconds, "server_torch_threads": 1,
            "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)], "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    v = meta["versions"]
    lines = [f"# lossdial serve on loopback ({meta['date']})", "",
             f"Machine: {meta['machine']}, shared with other jobs while this ran (1-minute load average "
             f"{meta['load_average_1min'][0]:g} before, {meta['load_average_1min'][1]:g} after). Versions: Python {v['python']}, "
             f"torch {v['torch']}, fastapi {v['fastapi']}, uvicorn {v['uvicorn']}, starlette {v['starlette']}, "
             f"httpx {v['httpx']} (clients); lossdial {v['lossdial_commit']}.", "",
             f"Run: {meta['run']}. Each request: {args.inputs} validation images (8x8) as JSON arrays; 1 point or 8 "
             f"explicit points (8 lambdas: one backbone pass, 8 head passes). Per cell at most {args.requests} requests "
             f"or {args.seconds:g} s, in {args.rounds} rounds interleaved with the other cells; clients are threads with a keep-alive connection each, in one process on the same "
             f"machine. The server: `lossdial serve --no-page --device cpu` (torch threads per pass: 1, the default). "
             f"Every answer was checked against predict's library path (scores within 1e-6, decisions equal).",
             "", "| clients | points/request | requests | requests/s | p50 latency | p99 latency | failed | mismatched |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['points']} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.1f} ms | "
                     f"{r['p99_ms']:.1f} ms | {r['failed']} | {r['mismatched']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.md')} and .json")
    bad = sum(r["failed"] + r["mismatched"] for r in rows)
    if bad:
        raise SystemExit(f"{bad} request(s) failed or mismatched predict")


if __name__ == "__main__":
    main()
