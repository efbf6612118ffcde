"""Benchmark: peak RSS and time of `dmpf prepare` and of one full pass of the training data loader.

    .venv/bin/python benchmarks/data_pipeline.py                     # MOSEI-sized (~4.6 GB of features)
    .venv/bin/python benchmarks/data_pipeline.py --size tiny         # a quick check of the script itself

Each measured step runs in its own process; peak RSS is that process's maximum resident set size
(wait4's rusage), so the numbers do not include this driver.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADER_PASS = """
import sys, time
from dmpf_cli.model.tokenizer import offline_gpt2_tokenizer
from dmpf_cli.data.batches import SplitDataset, make_loader
from dmpf_cli.data.prepared import open_prepared
split = open_prepared(sys.argv[1]).split("train")
t0 = time.perf_counter()
dataset = SplitDataset(split, offline_gpt2_tokenizer(), text_len=50)
t1 = time.perf_counter()
loader = make_loader(dataset, batch_size=32, shuffle=True, seed=0, num_workers=int(sys.argv[2]))
n = 0
for batch in loader:
    n += int((batch["weight"] > 0).sum())  # the last batch is filled up with zero-weight fillers
t2 = time.perf_counter()
assert n == len(split), (n, len(split))
# RSS counts the memory-mapped file pages a pass touches (shared, reclaimable page cache); the
# process's own (anonymous) memory is what a dataset larger than RAM has to fit in.
anon_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:"))
print(f"{n} {t1 - t0:.3f} {t2 - t1:.3f} {anon_kib / 2**20:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mosei-like", choices=["tiny", "small", "mosei-like"])
    parser.add_argument("--workers", default="0,2", help="loader worker counts to measure, comma-separated")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary dir)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dmpf-bench-"))
    out_dir = work / f"synthetic-{args.size}"
    py = sys.executable
    try:
        rows = []
        wall, rss = measured([py, "-m", "dmpf_cli", "prepare", "--dataset", "synthetic", "--size", args.size,
                              "--output", str(out_dir), "--overwrite"])
        size_gb = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 2**30
        rows.append(("prepare (generate + pickle + safe import + write)", wall, rss, f"{size_gb:.2f} GiB written"))
        for workers in [int(w) for w in args.workers.split(",")]:
            wall, rss, out = measured([py, "-c", LOADER_PASS, str(out_dir), str(workers)], capture=True)
            n, tok_s, pass_s, anon = out.split()
            rows.append((f"loader pass, batch 32, {workers} workers", wall, rss,
                         f"{int(n):,} samples in {float(pass_s):.1f} s = {int(n) / float(pass_s):,.0f} samples/s "
                         f"(+ {float(tok_s):.1f} s tokenising); own memory {float(anon):.2f} GiB, the rest is "
                         "mapped file pages"))
        print(f"{'step':<52} {'wall s':>8} {'peak RSS GiB':>13}  notes")
        for name, wall, rss, note in rows:
            print(f"{name:<52} {wall:>8.1f} {rss:>13.2f}  {note}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def measured(cmd: list[str], capture: bool = False):
    """Run ``cmd``; (wall s, peak RSS GiB[, stdout]) from its own rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: {' '.join(cmd)}\n{err}")
    rss = usage.ru_maxrss / 2**20  # KiB on Linux
    return (wall, rss, out) if capture else (wall, rss)


if __name__ == "__main__":
    main()
