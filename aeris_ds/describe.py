"""What a config means in numbers, without allocating anything (works for the paper-scale presets)."""

from __future__ import annotations

from aeris_ds.config import ExperimentConfig
from aeris_ds.parallel.layout import WindowGrid


def parameter_count(cfg: ExperimentConfig) -> dict[str, int]:
    """Exact parameter counts of embed, one block, head (mirrors aeris_ds/model/swin_dit.py)."""
    m, d = cfg.model, cfg.model.dim
    embed = (cfg.in_channels + 4 * m.pos_freqs) * d + d + 2 * m.noise_freqs * d + d + d * d + d
    block = 3 * d * d + d * d + 2 * d * m.hidden + m.hidden * d + 6 * d * d + 6 * d
    head = 2 * d * d + 2 * d + d * cfg.data.n_channels + cfg.data.n_channels
    return {"embed": embed, "block": block, "head": head, "total": embed + m.depth * block + head}


def describe(cfg: ExperimentConfig) -> str:
    layout = cfg.layout.as_layout()
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, layout.wp, layout.sp,
                      cfg.layout.window_assignment, cfg.model.lat_mode)
    params = parameter_count(cfg)
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
    ]
    return "\n".join(lines)
