"""Wall time per stage of a job: a table printed at the end and a JSON file beside the run's outputs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aeris_ds.outputs import atomic_replace

# Set by launchers/demo.sh: seconds its environment setup took (the job cannot time what ran before it).
INSTALL_ENV = "AERIS_DS_INSTALL_SECONDS"


class StageTimes:
    """``with times("train"): ...`` records the stage's seconds; a stage whose output was already there is
    recorded as skipped, with its time from the run that made it when ``path`` has it. Every record rewrites
    ``path`` (atomically), so an interrupted job keeps its times and a rerun completes the table."""

    def __init__(self, path: Path, stages: list[str]) -> None:
        self.path, self.stages = path, stages
        self.skipped: list[str] = []
        try:
            self.earlier: dict[str, float] = json.loads(path.read_text())["seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            self.earlier = {}
        self.seconds = {k: v for k, v in self.earlier.items() if k == "install"}
        install = os.environ.get(INSTALL_ENV)
        if install:
            self.seconds["install"] = float(install)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.write()

    def skip(self, stage: str) -> None:
        self.skipped.append(stage)
        if stage in self.earlier:
            self.seconds[stage] = self.earlier[stage]
        self.write()

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"seconds": {s: round(self.seconds[s], 1) for s in self.stages if s in self.seconds},
                  "skipped": [s for s in self.stages if s in self.skipped],
                  "total_seconds": round(sum(self.seconds.values()), 1), "cpus": os.cpu_count()}
        with atomic_replace(self.path) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        return self.path

    def table(self) -> str:
        """Stage, minutes, share of the total; stages not run say why."""
        total = sum(self.seconds.values())
        lines = [f"{'stage':<10}{'time':>9}{'share':>8}"]
        for s in self.stages:
            if s in self.seconds:
                sec = self.seconds[s]
                note = "   (earlier run)" if s in self.skipped else ""
                lines.append(f"{s:<10}{sec / 60:>7.1f} m{sec / total if total else 0:>8.0%}{note}")
            else:
                why = "skipped (output present)" if s in self.skipped else "not timed"
                lines.append(f"{s:<10}{'—':>9}   {why}")
        lines.append(f"{'total':<10}{total / 60:>7.1f} m")
        return "\n".join(lines)
