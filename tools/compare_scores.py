"""Side-by-side scores of several forecasts of the same init times, each against a baseline system.

    python tools/compare_scores.py --baseline diffusion=runs/demo/scores \
        --system "consistency 1 step=runs/swift/consistency-1.scores" --out results/swift/comparison.md

Each folder is an ``aeris-ds evaluate`` output (its scores.csv). The markdown holds: per system, the ratio of
fair CRPS and of ensemble-mean RMSE to the baseline's over every scored variable and level at leads 1–5 days
(median and worst, and whether the worst is within 5 %); then fair CRPS, RMSE and spread/skill of the
headline fields per lead, with the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

DAYS = (1, 2, 3, 4, 5, 7, 10)
HEADLINE = (("geopotential", 500.0), ("temperature", 850.0), ("u_component_of_wind", 250.0), ("2m_temperature", None))
METRICS = (("crps", "fair CRPS"), ("rmse", "ensemble-mean RMSE"), ("spread_skill_corrected", "spread/skill"))
WITHIN = 1.05


def load(folder: Path) -> pd.DataFrame:
    frame = pd.read_csv(folder / "scores.csv")
    frame = frame[frame.system == "forecast"].copy()
    frame["level"] = frame["level"].fillna(-1.0)
    return frame.set_index(["metric", "variable", "level", "lead_hours"])["value"]


def stability(folder: Path) -> str:
    report = json.loads((folder / "scores.json").read_text()).get("stability", {})
    failed = [c["name"] for c in report.get("criteria", []) if c.get("passed") is False]
    return "pass" if report.get("passed") else f"fail ({'; '.join(failed)})"


def ratios(system: pd.Series, base: pd.Series, metric: str, max_hours: float) -> pd.Series:
    a, b = system.loc[metric], base.loc[metric]
    joined = pd.concat([a, b], axis=1, keys=["s", "b"], join="inner").dropna()
    joined = joined[joined.index.get_level_values("lead_hours") <= max_hours]
    return joined["s"] / joined["b"]


def _field(variable: str, level: float | None) -> str:
    short = {"geopotential": "z", "temperature": "t", "u_component_of_wind": "u", "2m_temperature": "t2m"}
    return f"{short[variable]}{int(level)}" if level is not None else short[variable]


def markdown(base_name: str, base: pd.Series, systems: dict[str, pd.Series], verdicts: dict[str, str]) -> str:
    lines = [f"Ratios to **{base_name}** over every scored variable and level, leads 1–5 days "
             f"(goal: within {WITHIN - 1:.0%}, i.e. worst ≤ {WITHIN}):", "",
             "| system | fair CRPS ratio: median | worst | ens.-mean RMSE ratio: median | worst | within 5 % | "
             "stability (10 d) |", "|---|---|---|---|---|---|---|"]
    for name, frame in systems.items():
        crps, rmse = (ratios(frame, base, m, 120.0) for m in ("crps", "rmse"))
        ok = "yes" if max(crps.max(), rmse.max()) <= WITHIN else "no"
        lines.append(f"| {name} | {crps.median():.3f} | {crps.max():.3f} | {rmse.median():.3f} | {rmse.max():.3f} | "
                     f"{ok} | {verdicts[name]} |")
    lines.append(f"| {base_name} | 1 | 1 | 1 | 1 | – | {verdicts[base_name]} |")
    for metric, title in METRICS:
        lines += ["", f"{title} (ratio to {base_name})", "",
                  "| system | field | " + " | ".join(f"{d} d" for d in DAYS) + " |",
                  "|---|---|" + "---|" * len(DAYS)]
        for variable, level in HEADLINE:
            key = (metric, variable, -1.0 if level is None else level)
            for name, frame in {base_name: base, **systems}.items():
                cells = []
                for d in DAYS:
                    value, ref = frame.get((*key, 24.0 * d), np.nan), base.get((*key, 24.0 * d), np.nan)
                    cells.append(f"{value:.4g}" if name == base_name else f"{value:.4g} ({value / ref:.2f})")
                lines.append(f"| {name} | {_field(variable, level)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=_named, required=True, help="NAME=SCORES_FOLDER")
    p.add_argument("--system", type=_named, action="append", required=True, help="NAME=SCORES_FOLDER (repeat)")
    p.add_argument("--out", type=Path, required=True, help="markdown file")
    args = p.parse_args(argv)
    base_name, base_dir = args.baseline
    folders = dict([args.baseline, *args.system])
    text = markdown(base_name, load(base_dir), {n: load(f) for n, f in args.system},
                    {n: stability(f) for n, f in folders.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
