"""FLOP and memory accounting, the bytes a SWiPe layout sends, a performance model of layouts, and a layout
planner."""

from aeris_ds.perf.flops import peak_flops, step_flops

__all__ = ["peak_flops", "step_flops"]
