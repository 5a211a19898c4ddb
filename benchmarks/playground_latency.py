"""Latency of the playground's race endpoint, as the page sees it: HTTP POST
/api/race on a local server, 4 optimizers × 300 steps on Beale, each request a start
point the cache has not seen (so all four are computed); and one optimizer's learning
rate changed (the other three from the cache). Median and quartiles over repeats.

    python benchmarks/playground_latency.py [--repeats 30] [--json]

It also splits the in-process race into its parts (the shared autograd pass, the
optimizers' steps, reading their state) to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
import urllib.request

import torch

from descent.playground.server import PlaygroundServer

OPTIMIZERS = [
    {"key": "sgd", "lr": 0.03},
    {"key": "momentum", "lr": 0.003, "momentum": 0.9},
    {"key": "rmsprop", "lr": 0.018, "alpha": 0.9},
    {"key": "adam", "lr": 0.1, "betas": [0.9, 0.999]},
]


def post(url: str, body: dict) -> float:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url + "api/race", data=data, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
    return (time.perf_counter() - t) * 1000


def measure(repeats: int) -> dict:
    server = PlaygroundServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cold, one = [], []
    for i in range(repeats + 2):
        start = [0.7 + 0.001 * i, 1.4]
        body = {"surface": "beale", "steps": 300, "start": start, "optimizers": OPTIMIZERS}
        a = post(server.url, body)
        changed = [dict(o) for o in OPTIMIZERS]
        changed[3]["lr"] = 0.05 + 0.0001 * i
        b = post(server.url, {**body, "optimizers": changed})
        if i >= 2:  # the first requests warm up imports and allocators
            cold.append(a)
            one.append(b)
    server.shutdown()

    def summary(xs: list[float]) -> dict:
        q = statistics.quantiles(xs, n=4)
        return {"median_ms": statistics.median(xs), "q1_ms": q[0], "q3_ms": q[2], "n": len(xs)}

    return {"all_four": summary(cold), "one_changed": summary(one), "parts": parts(repeats)}


def parts(repeats: int) -> dict:
    """Median ms per race of 4 × 300 on Beale: the shared backward, the steps, the state."""
    from descent import catalog
    from descent.landscapes import surfaces

    s = surfaces.get("beale")
    split = {"autograd": [], "steps": [], "state": []}
    for _ in range(repeats):
        ps = [torch.tensor(s.start, dtype=torch.float64, requires_grad=True) for _ in OPTIMIZERS]
        opts = [
            catalog.get(o["key"]).make(
                [p], **{k: tuple(v) if isinstance(v, list) else v for k, v in o.items() if k != "key"}
            )
            for o, p in zip(OPTIMIZERS, ps)
        ]
        for p in ps:
            p.grad = torch.zeros_like(p)
        tg = ts = tr = 0.0
        for _ in range(300):
            a = time.perf_counter()
            X = torch.stack([p.detach() for p in ps]).requires_grad_()
            (G,) = torch.autograd.grad(s.f(X).sum(), X)
            b = time.perf_counter()
            for j, o in enumerate(opts):
                ps[j].grad.copy_(G[j])
                o.step()
            c = time.perf_counter()
            for j, o in enumerate(opts):
                {k: v.clone() for k, v in o.state[ps[j]].items() if k != "step"}
            tg, ts, tr = tg + b - a, ts + c - b, tr + time.perf_counter() - c
        for k, v in zip(split, (tg, ts, tr)):
            split[k].append(v * 1000)
    return {k: statistics.median(v) for k, v in split.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = measure(args.repeats)
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "load_average": os.getloadavg(),
        "results": results,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['date']}  {info['machine']}  load {', '.join(f'{x:.1f}' for x in info['load_average'])}")
    for what in ("all_four", "one_changed"):
        s = results[what]
        spread = f"quartiles {s['q1_ms']:.1f} … {s['q3_ms']:.1f}, n={s['n']}"
        print(f"{what:<12} median {s['median_ms']:6.1f} ms  ({spread})")
    print("in process, per race: " + ", ".join(f"{k} {v:.1f} ms" for k, v in results["parts"].items()))


if __name__ == "__main__":
    main()
