"""FLOP and memory accounting, a performance model of SWiPe layouts, and a layout planner."""

from aeris_ds.perf.flops import peak_flops, step_flops

__all__ = ["peak_flops", "step_flops"]
