"""The SWiPe performance model from the command line.

    python tools/perfmodel.py                       # the paper's Aurora headline, predicted
    python tools/perfmodel.py calibrate results/sweep_cpu/results.jsonl [--write]

``calibrate`` fits the CPU machine's efficiency and per-step overhead on the 1-rank runs of a
sweep and reports the prediction error on every multi-rank layout (not used in the fit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aeris_ds.perf.flops import GiB, cpu_gemm_rate
from aeris_ds.perf.model import CALIBRATION, PAPER, aurora_headline, calibrate, cpu_machine


def headline() -> None:
    h = aurora_headline()
    m, p = h["machine"], h["prediction"]
    print("AERIS 40B, WP=36 × PP=20 × SP=12 × DP=14 on 10,080 Aurora nodes (120,960 tiles), "
          f"micro-batch 1 × {h['run'].accumulation} per step, ZeRO-1, bf16, activation checkpointing")
    print(f"fitted (the one number fitted to one figure): efficiency = {m.efficiency:.3f} of the tile's bf16 peak, "
          f"so that the sustained rate is {PAPER['sustained'] / 1e18:.2f} EF")
    print(f"{'figure':<26}{'paper':>10}{'model':>10}{'error':>9}")
    rows = [("sustained EF (fitted)", PAPER["sustained"] / 1e18, h["sustained"] / 1e18),
            ("peak EF (not modelled)", PAPER["peak"] / 1e18, h["sustained"] / 1e18),
            ("weak scaling 720→10,080", PAPER["weak"], h["weak"]),
            ("strong scaling 720→10,080", PAPER["strong"], h["strong"])]
    for name, paper, model in rows:
        print(f"{name:<26}{paper:>10.3f}{model:>10.3f}{model / paper - 1:>+9.1%}")
    print(f"model FLOP/s per tile {h['sustained'] / p.devices / 1e12:.1f} TF = MFU {h['mfu']:.3f}; step "
          f"{p.step_time:.2f} s: " + ", ".join(f"{k} {v:.0%}" for k, v in p.breakdown().items()))
    print(f"shifted windows move f = {h['moved_fraction']:.3f} of tokens across WP ranks; memory per tile "
          f"{p.memory.describe()} of {p.capacity / GiB:.0f} GiB")
    print("sensitivity to the one unknown setting, micro-batches per step (efficiency refitted each time):")
    for acc in (20, 40, 80, 160):
        try:
            alt = aurora_headline(acc)
        except ValueError as err:  # the bubble alone rules the figure out
            print(f"  accumulation {acc:>3}: {err}")
            continue
        print(f"  accumulation {acc:>3}: efficiency {alt['machine'].efficiency:.3f}, bubble "
              f"{alt['prediction'].bubble:.0%}, weak {alt['weak']:.3f}, strong {alt['strong']:.3f}")
    print("assumed (not fitted):")
    for note in m.assumptions:
        print(f"  - {note}")
    print("  - the peak figure is the best step of the run; a steady-state model predicts one rate for both")
    print("  - weak scaling base: one replica (DP=1, 720 nodes) at the same micro-batches per replica; strong "
          "scaling base: DP=1 with the full global batch (14 × 40 micro-batches); the paper's bases are not "
          "given in the abstract")


def calibrate_cmd(results: Path, write: bool) -> None:
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    fit = [r["ranks"] == 1 for r in records]
    machine = cpu_machine(calibration=None)
    machine = machine.__class__(**{**machine.__dict__, "peak": {"fp32": records[0]["peak_flops"],
                                                               "bf16": cpu_gemm_rate("bf16")}})
    fitted, errors = calibrate(records, machine, fit)
    print(f"CPU ({records[0].get('machine', '?')}): efficiency {fitted.efficiency:.3f} of the measured fp32 GEMM "
          f"rate {fitted.peak['fp32'] / 1e9:.1f} GFLOP/s per core, overhead {fitted.overhead * 1e3:.0f} ms per "
          "step")
    print(f"{'run':<24}{'ranks':>6}{'measured s':>12}{'predicted s':>12}{'error':>8}  used")
    for r, err, used in zip(records, errors, fit, strict=True):
        print(f"{r['id']:<24}{r['ranks']:>6}{r['step_time_s']:>12.3f}{r['step_time_s'] * (1 + err):>12.3f}"
              f"{err:>+8.1%}  {'fit' if used else 'held out'}")
    held = [abs(e) for e, used in zip(errors, fit, strict=True) if not used]
    if held:
        print(f"held-out |error|: mean {sum(held) / len(held):.1%}, max {max(held):.1%} over {len(held)} layouts")
    if write:
        CALIBRATION.parent.mkdir(parents=True, exist_ok=True)
        CALIBRATION.write_text(json.dumps({
            "efficiency": fitted.efficiency, "overhead": fitted.overhead, "peak": fitted.peak,
            "machine": records[0].get("machine"), "fit": [r["id"] for r, u in zip(records, fit, strict=True) if u],
            "held_out_errors": {r["id"]: e for r, e, u in zip(records, errors, fit, strict=True) if not u},
        }, indent=1))
        print(f"wrote {CALIBRATION.relative_to(CALIBRATION.parents[2])}")  # repository-relative


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    cal = sub.add_parser("calibrate", help="fit the CPU machine on a sweep's 1-rank runs")
    cal.add_argument("results", type=Path)
    cal.add_argument("--write", action="store_true", help=f"save the calibration to {CALIBRATION}")
    args = parser.parse_args(argv)
    if args.cmd == "calibrate":
        calibrate_cmd(args.results, args.write)
    else:
        headline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
