"""What a config means in numbers, without allocating anything (works for the paper-scale presets)."""

from __future__ import annotations

from pathlib import Path

from aeris_ds.config import ExperimentConfig
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.perf.flops import memory_per_rank, parameter_counts, step_flops


def describe(cfg: ExperimentConfig) -> str:
    layout = cfg.layout.as_layout()
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, layout.wp, layout.sp,
                      cfg.layout.window_assignment, cfg.model.lat_mode)
    params = parameter_counts(cfg)
    tokens = cfg.grid.lat * cfg.grid.lon
    lines = [
        f"config        {cfg.name}",
        f"parameters    {params['total']:,} ({params['total'] / 1e9:.3f} B; block {params['block']:,})",
        f"grid          {cfg.grid.lat}×{cfg.grid.lon} = {tokens:,} tokens, {cfg.data.n_channels} channels, "
        f"{cfg.in_channels} inputs per token",
        f"windows       {cfg.model.window[0]}×{cfg.model.window[1]}: {grid.n_windows} windows, "
        f"{grid.window_tokens} tokens each",
        f"layout        {layout} = {layout.world} ranks; {tokens // (layout.wp * layout.sp):,} tokens per rank",
        f"shift moves   {grid.moved_fraction():.3f} of tokens to another WP rank "
        f"({cfg.layout.window_assignment} assignment)",
        f"FLOPs         {_si(step_flops(cfg))}FLOP per sample (forward + backward, matmuls)",
        f"memory/rank   {memory_per_rank(cfg).describe()} (bf16, ZeRO-1, micro-batch 1, busiest stage)",
    ]
    if cfg.data.store and Path(cfg.data.store).exists():
        lines += _store_lines(cfg)
    return "\n".join(lines)


def _store_lines(cfg: ExperimentConfig) -> list[str]:
    """How the reader sees the configured store: grid adaptation, chunking, splits (metadata only)."""
    from aeris_ds.data.rechunk import read_amplification
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.splits import split_spec

    src = WeatherSource(cfg.data.store, cfg.data, grid=(cfg.grid.lat, cfg.grid.lon))
    name = (cfg.data.atmospheric + cfg.data.surface)[0]
    arr, dims = src.arrays[name], src.ds[name].dims
    chunk = (arr.chunks[dims.index("latitude")], arr.chunks[dims.index("longitude")])
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, cfg.layout.wp, cfg.layout.sp,
                      cfg.layout.window_assignment, cfg.model.lat_mode)
    rows, cols, _ = grid.read_block(0, 0)
    waste = read_amplification(chunk, (arr.shape[dims.index("latitude")], arr.shape[dims.index("longitude")]),
                               src.grid.rows[rows], src.grid.cols[cols])
    splits = []
    for split in ("train", "valid", "test"):
        found = split_spec(split, cfg.data.splits, src.ds.attrs)
        splits.append(f"{split} {found[0]} ({found[1]})" if found else f"{split} missing")
    return [f"store         {cfg.data.store}: zarr v{arr.metadata.zarr_format}, {len(src.times)} times, chunks "
            f"{chunk[0]}×{chunk[1]} lat×lon: rank 0 decodes {waste:.1f}× its share",
            f"data grid     {src.grid.description} [data.grid_adapt {cfg.data.grid_adapt}]",
            f"splits        {'; '.join(splits)}"]


def _si(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} "
