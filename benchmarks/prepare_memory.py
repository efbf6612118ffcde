"""Benchmark: peak RSS and wall time of `dmpf prepare --dataset mosei` on a MOSEI-sized MMSA pickle.

    .venv/bin/python benchmarks/prepare_memory.py                          # MOSEI's sizes: a ~4.6 GB pickle
    .venv/bin/python benchmarks/prepare_memory.py --python /other/.venv/bin/python   # also another checkout
    .venv/bin/python benchmarks/prepare_memory.py --scale 0.01             # a quick check of the script itself

The pickle has MOSEI's splits (16,326 / 1,871 / 4,659 samples), audio 500×74 and vision 375×35 float32
(random, with −inf in the audio as COVAREP has), lengths, labels in [−3, 3], texts and ids, written with
pickle protocol 4 (``--protocol``). It is written once into a temporary directory (or ``--dir``) and
deleted at the end. Each ``--python`` interpreter (default: this one) then runs ``dmpf prepare`` in its own
process, from the pickle's directory (so each imports its own dmpf); peak RSS is that process's maximum
resident set size (wait4's rusage), not this driver's.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_pipeline import measured  # noqa: E402  (the benchmarks' one way to run and measure a step)

MOSEI = {"train": 16326, "valid": 1871, "test": 4659}
AUDIO, VISION = (500, 74), (375, 35)


class _Features:
    """Stands for one feature array in the pickled dict; generated only while the pickler writes it, so
    the writer holds one array at a time."""

    def __init__(self, shape: tuple[int, ...], seed: int, neg_inf: bool):
        self.shape, self.seed, self.neg_inf = shape, seed, neg_inf

    def array(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        out = np.empty(self.shape, dtype=np.float32)
        for start in range(0, self.shape[0], 1024):
            block = out[start:start + 1024]
            block[...] = rng.standard_normal(block.shape, dtype=np.float32)
            if self.neg_inf:
                block[:, ::50, 3] = -np.inf
        return out


class _Writer(pickle.Pickler):
    def __init__(self, file, protocol: int):  # noqa: ANN001
        super().__init__(file, protocol=protocol)
        self.protocol = protocol

    def reducer_override(self, obj):  # noqa: ANN001, ANN201
        if isinstance(obj, _Features):
            return obj.array().__reduce_ex__(self.protocol)
        return NotImplemented


def write_mosei_pickle(path: Path, scale: float, protocol: int) -> None:
    data = {}
    for i, (split, full) in enumerate(MOSEI.items()):
        n = max(2, round(full * scale))
        rng = np.random.default_rng(i)
        data[split] = {
            "raw_text": np.array([f"{split} clip {k}: the speaker found it rather good, mostly" for k in range(n)],
                                 dtype=object),
            "audio": _Features((n, *AUDIO), 10 + i, neg_inf=True),
            "vision": _Features((n, *VISION), 20 + i, neg_inf=False),
            "audio_lengths": rng.integers(1, AUDIO[0] + 1, n),
            "vision_lengths": rng.integers(1, VISION[0] + 1, n),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "classification_labels": rng.integers(0, 3, n),
            "id": np.array([f"{split}_{k:05d}" for k in range(n)], dtype=object),
        }
    with open(path, "wb") as f:
        writer = _Writer(f, protocol=protocol)
        writer.fast = True  # no memo: each array's bytes are freed once written
        writer.dump(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write the pickle (default: a temporary dir)")
    parser.add_argument("--python", action="append", default=None,
                        help="an interpreter with dmpf installed (repeatable; default: this one)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MOSEI's sample counts")
    parser.add_argument("--protocol", type=int, default=4, choices=[2, 3, 4, 5])
    parser.add_argument("--write-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    pythons = [os.path.abspath(p) if os.sep in p else p for p in args.python or [sys.executable]]  # before chdir
    if args.write_only:
        return write_mosei_pickle(args.write_only, args.scale, args.protocol)

    work = Path(tempfile.mkdtemp(prefix="dmpf-prepare-bench-", dir=args.dir))
    try:
        source = work / "unaligned_50.pkl"
        start = time.perf_counter()
        # in a process of its own: a child forked from a driver holding GiBs would count them as its own peak
        subprocess.run([sys.executable, __file__, "--write-only", str(source), "--scale", str(args.scale),
                        "--protocol", str(args.protocol)], check=True)
        size = source.stat().st_size
        os.chdir(work)  # so that `python -m dmpf_cli` imports each interpreter's own dmpf, not one from the cwd
        print(f"wrote {source} ({size / 2**30:.2f} GiB, protocol {args.protocol}) in "
              f"{time.perf_counter() - start:.0f} s")
        print(f"{'interpreter':<48} {'wall s':>8} {'peak RSS GiB':>13}")
        for python in pythons:
            output = work / "prepared"
            wall, rss = measured([python, "-m", "dmpf_cli", "prepare", "--dataset", "mosei", "--source", str(source),
                                  "--output", str(output)])
            print(f"{python:<48} {wall:>8.1f} {rss:>13.2f}")
            shutil.rmtree(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
