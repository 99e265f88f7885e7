"""Held–Suarez generation benchmark: ``heldsuarez.generate`` (spin-up, diagnostics, store writes, resume
points) against the bare dycore loop (``model.run_chunk`` over the same chunks), measured in the same run.

Both start after the compilation (one chunk run first); the pair is repeated and alternated so that a
change in the machine's load hits both. Target: generate ≤ 1.1× the bare loop.

    python tools/bench_heldsuarez.py [--chunks 4] [--spinup-chunks 1] [--chunk-days 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from aeris_ds.data import heldsuarez


def bare(model: heldsuarez.HeldSuarezModel, n_chunks: int, seed: int) -> float:
    start = time.perf_counter()
    state = model.initial_state(seed)
    for _ in range(n_chunks):
        state, _ = model.run_chunk(state)
    return time.perf_counter() - start


def generate(out: Path, chunks: int, spinup_chunks: int, chunk_days: int, seed: int) -> float:
    start = time.perf_counter()
    heldsuarez.generate(out, years_train=chunks * chunk_days / 365, years_valid=0, years_test=0,
                        spinup_days=spinup_chunks * chunk_days, seed=seed, chunk_days=chunk_days, progress=False)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, default=4, help="saved chunks")
    p.add_argument("--spinup-chunks", type=int, default=1)
    p.add_argument("--chunk-days", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    model = heldsuarez.get_model("T21", a.chunk_days * 24 // heldsuarez.FRAME_HOURS)
    start = time.perf_counter()
    model.run_chunk(model.initial_state(0))
    print(f"first chunk (compile or persistent-cache load + run): {time.perf_counter() - start:.1f} s")
    n = a.chunks + a.spinup_chunks
    days = n * a.chunk_days
    print(f"{n} chunks of {a.chunk_days} days ({a.spinup_chunks} spin-up), T21")
    print(f"{'repeat':>6}{'bare s':>9}{'generate s':>12}{'ratio':>7}{'bare s/day':>12}")
    totals = [0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            t_bare = bare(model, n, seed=r)
            t_gen = generate(Path(tmp) / f"r{r}.zarr", a.chunks, a.spinup_chunks, a.chunk_days, seed=r)
            totals[0] += t_bare
            totals[1] += t_gen
            print(f"{r:>6}{t_bare:>9.1f}{t_gen:>12.1f}{t_gen / t_bare:>7.3f}{t_bare / days:>12.3f}")
    print(f"{'all':>6}{totals[0]:>9.1f}{totals[1]:>12.1f}{totals[1] / totals[0]:>7.3f}")


if __name__ == "__main__":
    main()
