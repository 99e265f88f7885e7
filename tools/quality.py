"""Quality against training compute: one row per training budget, one figure against samples seen.

    python tools/quality.py --runs runs/quality --scores results/quality/scores --out results/quality
    python tools/quality.py --runs former=results/quality/runs current=results/quality/runs/current

Reads each budget's training summary (``<runs>/m<MINUTES>/summary.json`` or ``<runs>/m<MINUTES>.summary.json``:
steps, samples seen, final LR) and
the ``aeris-ds evaluate`` outputs that ``tools/calibration.py`` wrote for it (``<scores>/m<MINUTES>-10d-20x8/``
and ``…-90d-4x4/``), and writes ``quality.md``, ``quality.csv`` and ``quality.png``: z500/t850 RMSE ÷
persistence at 1 and 3 days and spread/skill at 1/3/5/10 days (90 % bootstrap intervals over init times), the
z500 power ratio in the top third of the wavenumbers inside the truncation at 1, 10, 30, 60 and 90 days, and
the largest spatial-std ratio of the 90-day rollout. ``launchers/quality.sh`` runs the whole curve. Several
``LABEL=DIR`` runs (recipes) share the table and the figure: one column per recipe and budget, one curve per
recipe (the last one drawn solid, the earlier ones faded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from aeris_ds.outputs import atomic_replace

HEADLINE = (("z500", "geopotential", 500), ("t850", "temperature", 850), ("u250", "u_component_of_wind", 250))


def _metric(frame: pd.DataFrame, metric: str, variable: str, level: int, days: float) -> tuple[float, float, float]:
    rows = frame[(frame.system == "forecast") & (frame.metric == metric) & (frame.variable == variable)
                 & np.isclose(frame.level, level) & np.isclose(frame.lead_hours, 24 * days)]
    if not len(rows):
        return (np.nan, np.nan, np.nan)
    r = rows.iloc[0]
    return (float(r.value), float(r.lo), float(r.hi))


def _diagnostic(scores: Path, name: str, variable: str, level: int | None, days: float) -> float:
    diag = pd.DataFrame(json.loads((scores / "scores.json").read_text())["stability"]["diagnostics"])
    at = diag[(diag.diagnostic == name) & np.isclose(diag.lead_hours, 24 * days)]
    if level is not None:
        at = at[np.isclose(at.level, level)]
    values = at[variable].to_numpy(dtype=float) if variable in at else np.array([])
    return float(values[0]) if values.size else np.nan


def _worst_std_ratio(scores: Path) -> float:
    """The largest spatial-std ratio (forecast ÷ truth) over variables, levels and leads."""
    diag = pd.DataFrame(json.loads((scores / "scores.json").read_text())["stability"]["diagnostics"])
    at = diag[diag.diagnostic == "std_ratio"].drop(columns=["diagnostic", "level", "lead_hours"])
    return float(np.nanmax(at.to_numpy(dtype=float)))


def budget_row(summary_path: Path, scores: Path, recipe: str = "") -> dict[str, float | str]:
    """The curve's numbers for one training budget (NaN where its forecasts are not scored yet)."""
    label = _budget_label(summary_path)
    summary = json.loads(summary_path.read_text())
    row: dict[str, float | str] = {"recipe": recipe, "budget_min": float(label.removeprefix("m")),
                                   "steps": summary["steps"], "samples_seen": summary.get("samples_seen", np.nan),
                                   "final_lr": summary.get("final_lr")}
    ten, ninety = scores / f"{label}-10d-20x8", scores / f"{label}-90d-4x4"
    if (ten / "scores.csv").exists():
        frame = pd.read_csv(ten / "scores.csv")
        for short, name, level in HEADLINE[:2]:
            for d in (1, 3):
                v, lo, hi = _metric(frame, "rmse_ratio_persistence", name, level, d)
                key = f"{short} RMSE/pers {d}d"
                row |= {key: v, f"{key} lo": lo, f"{key} hi": hi}
        for short, name, level in HEADLINE:
            for d in (1, 3, 5, 10):
                v, lo, hi = _metric(frame, "spread_skill_corrected", name, level, d)
                key = f"{short} SSR {d}d"
                row |= {key: v, f"{key} lo": lo, f"{key} hi": hi}
        for d in (1, 10):
            row[f"z500 high-band power {d}d"] = _diagnostic(ten, "power_ratio_high", "geopotential", 500, d)
    if (ninety / "scores.json").exists():
        for d in (30, 60, 90):
            row[f"z500 high-band power {d}d"] = _diagnostic(ninety, "power_ratio_high", "geopotential", 500, d)
        row["90d worst std ratio"] = _worst_std_ratio(ninety)
    return row


def markdown(frame: pd.DataFrame) -> str:
    """One column per budget; a value with its interval where it has one."""
    cols = [f"{r} {b:g} min".lstrip() for r, b in zip(frame.recipe, frame.budget_min)]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key in frame.columns:
        if key.endswith((" lo", " hi")) or key in ("budget_min", "recipe"):
            continue
        cells = []
        for _, r in frame.iterrows():
            v = r[key]
            cell = f"{v:.3g}" if isinstance(v, float) else str(v)
            if f"{key} lo" in frame.columns and np.isfinite(r[f"{key} lo"]):
                cell += f" [{r[f'{key} lo']:.3g}, {r[f'{key} hi']:.3g}]"
            cells.append(cell)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(frame: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    recipes = list(dict.fromkeys(frame.recipe))
    for i, recipe in enumerate(recipes):
        _draw(axes, frame[frame.recipe == recipe], alpha=1.0 if i == len(recipes) - 1 else 0.35,
              tag=f" ({recipe})" if len(recipes) > 1 else "")
    axes[0].set(xscale="log", xlabel="training samples seen", ylabel="RMSE ÷ persistence", title="skill")
    axes[1].axhspan(0.8, 1.2, color="0.9", zorder=0)
    axes[1].set(xscale="log", xlabel="training samples seen", ylabel="spread/skill (corrected)", title="calibration")
    axes[2].axhspan(0.5, 2, color="0.9", zorder=0)
    axes[2].set(xscale="log", yscale="log", xlabel="training samples seen", ylabel="forecast ÷ truth",
                title="spectra and stability")
    for ax, size, ncol in zip(axes, (7, 5, 6), (1, 3, 1)):
        ax.legend(fontsize=size, ncol=ncol)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return path


def _draw(axes, frame: pd.DataFrame, alpha: float, tag: str) -> None:
    """One recipe's curves; each quantity keeps its colour across recipes."""
    x = frame.samples_seen.to_numpy(dtype=float)
    ax = axes[0]
    for c, (short, d, style) in enumerate((s, d, st) for s in ("z500", "t850") for d, st in ((1, "-o"), (3, "--s"))):
        key = f"{short} RMSE/pers {d}d"
        if key in frame:
            ax.errorbar(x, frame[key], yerr=[frame[key] - frame[f"{key} lo"], frame[f"{key} hi"] - frame[key]],
                        fmt=style, capsize=3, color=f"C{c}", alpha=alpha, label=f"{short} {d} d{tag}")
    ax = axes[1]
    for c, (short, d, style) in enumerate((s, d, st) for s, _, _ in HEADLINE
                                          for d, st in ((1, "-o"), (3, "--s"), (5, ":^"), (10, "-.v"))):
        key = f"{short} SSR {d}d"
        if key in frame:
            ax.plot(x, frame[key], style, color=f"C{c % 10}", alpha=alpha, lw=1, label=f"{short} {d} d{tag}")
    ax = axes[2]
    for c, (d, style) in enumerate(((1, "-o"), (10, "--s"), (30, ":^"), (60, "-.v"), (90, "-D"))):
        key = f"z500 high-band power {d}d"
        if key in frame:
            ax.plot(x, frame[key], style, color=f"C{c}", alpha=alpha, label=f"z500 high band, {d} d{tag}")
    if "90d worst std ratio" in frame:
        ax.plot(x, frame["90d worst std ratio"], "k-x", alpha=alpha, label=f"90 d worst std ratio{tag}")


def summaries(runs: str) -> list[Path]:
    """Each budget's training summary under ``runs``, by budget: ``m<MIN>/summary.json`` or ``m<MIN>.summary.json``."""
    found = [*Path(runs).glob("m*/summary.json"), *Path(runs).glob("m*.summary.json")]
    return sorted(found, key=lambda p: float(_budget_label(p).removeprefix("m")))


def _budget_label(summary_path: Path) -> str:
    """``m48`` for ``m48/summary.json`` and for ``m48.summary.json``."""
    if summary_path.name == "summary.json":
        return summary_path.parent.name
    return summary_path.name.removesuffix(".summary.json")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["runs/quality"], metavar="[LABEL=]DIR",
                   help="training runs, one directory per recipe (a label names the recipe in the table and figure)")
    p.add_argument("--scores", default="results/quality/scores")
    p.add_argument("--out", default="results/quality")
    args = p.parse_args(argv)
    rows = []
    for spec in args.runs:
        recipe, _, runs = spec.rpartition("=")
        found = summaries(runs)
        if not found:
            raise SystemExit(f"error: no trained budgets (m<MINUTES>/summary.json, m<MINUTES>.summary.json) in {runs}")
        rows += [budget_row(s, Path(args.scores), recipe) for s in found]
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_replace(out / "quality.csv") as tmp:
        frame.to_csv(tmp, index=False)
    table = markdown(frame)
    with atomic_replace(out / "quality.md") as tmp:
        tmp.write_text(table)
    with atomic_replace(out / "quality.png") as tmp:
        figure(frame, tmp)
    print(table)
    print(out / "quality.png")


if __name__ == "__main__":
    main()
