"""Time and peak memory of training a baseline and of scoring 100k clients, per detector set.

A log with 100k clients would be ~30M lines (parsing speed is bench_pipeline.py's job), so the client
feature tables here are made by resampling, with jitter, the per-client features of a generated log
(bench/loggen.py) that includes planted attackers. Each measurement runs in a fresh process, so peak RSS
is that run's own (including the TensorFlow import when the autoencoder runs); figures are medians.

    python bench/bench_models.py --train-clients 5000 --clients 100000 --runs 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import polars as pl
import anomaly_detector as detect
from log_analyser_core.detectors import attribution, model_store
table = pl.read_parquet({table!r})
used = [c for c in {features!r}]
detectors = tuple({detectors!r})
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""
MODES = {
    # fit the detectors on trusted clients and save the model directory
    "train": ("baseline = detect.fit_baseline(table, used, detectors)\n"
              "model_store.save(baseline, {model!r}, {{'sources': ['bench']}})"),
    # load that model, score every client, explain the top 1% (what --model --contamination 0.01 does)
    "score with model": ("baseline = model_store.load({model!r}, detectors).baseline\n"
                         "fused, own = detect.score_with(baseline, table)\n"
                         "top = fused.argsort()[::-1][:len(fused) // 100].tolist()\n"
                         "attribution.explain(baseline, detect.feature_matrix(table, used), top)"),
    # the default run: fit on the log's own clients, then score and explain
    "fit and score": ("baseline = detect.fit_baseline(table, used, detectors)\n"
                      "fused, own = detect.score_with(baseline, table)\n"
                      "top = fused.argsort()[::-1][:len(fused) // 100].tolist()\n"
                      "attribution.explain(baseline, detect.feature_matrix(table, used), top)"),
}


def client_table(clients: int, seed: int) -> tuple[pl.DataFrame, list[str]]:
    """``clients`` rows resampled from a generated log's clients, counts and sizes jittered by +-30%."""
    import loggen

    import file_parser
    from log_analyser_core.features import client as ip_features

    generated = loggen.generate(300_000, seed=seed, dirbuster=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_models_"))
    (folder / "access.log").write_text("\n".join(generated.lines.to_list()) + "\n", encoding="utf-8")
    base = ip_features.compute(file_parser.parse([str(folder / "access.log")]).events)
    used = ip_features.logged_features(base)
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, base.height, clients)]
    heavy = [f for f in used if ip_features.BY_NAME[f].heavy_tailed]
    jitter = rng.uniform(0.7, 1.3, (clients, len(heavy)))
    rows = rows.with_columns([(pl.col(f) * pl.Series(jitter[:, k])).alias(f) for k, f in enumerate(heavy)])
    return rows.with_columns(pl.format("c{}", pl.int_range(clients)).alias("client_ip")), used


def measure(mode: str, table: Path, used: list[str], detectors: list[str], model: Path) -> dict:
    body = MODES[mode].format(model=str(model))
    code = CHILD.format(root=str(ROOT), table=str(table), features=used, detectors=detectors, body=body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-clients", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--detectors", nargs="+", default=["iforest", "iforest,autoencoder"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_models_"))
    train_table, used = client_table(args.train_clients, seed=1)
    score_table, _ = client_table(args.clients, seed=2)
    train_table.write_parquet(folder / "train.parquet")
    score_table.write_parquet(folder / "score.parquet")
    print("| detectors | stage | clients | time (median) | peak RSS (median) |\n| --- | --- | --- | --- | --- |")
    for spec in args.detectors:
        detectors = spec.split(",")
        model = folder / f"model-{'-'.join(detectors)}"
        for mode, table, n in (("train", "train", args.train_clients), ("score with model", "score", args.clients),
                               ("fit and score", "score", args.clients)):
            runs = [measure(mode, folder / f"{table}.parquet", used, detectors, model) for _ in range(args.runs)]
            seconds = statistics.median(r["seconds"] for r in runs)
            rss = statistics.median(r["rss"] for r in runs) / 2**20
            print(f"| {spec} | {mode} | {n:,} | {seconds:.2f} s | {rss:,.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
