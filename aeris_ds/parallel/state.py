"""Process groups of a SWiPe layout, in the style of megatron-core's parallel_state.

Every rank creates every group in the same order (torch.distributed requires it), then keeps the ones
it belongs to. DeepSpeed's own topology is ``["pipe", "data"]`` with data = DP·WP·SP flattened, so
DeepSpeed averages gradients over the whole weight-replica group; the WP and SP groups are ours.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch.distributed as dist
from deepspeed.runtime.pipe.topology import ProcessTopology

from aeris_ds.errors import LayoutError
from aeris_ds.parallel.layout import Layout, WindowGrid


@dataclass
class ParallelState:
    layout: Layout
    rank: int
    pp: int
    dp: int
    wp: int
    sp: int
    sp_group: dist.ProcessGroup | None
    window_group: dist.ProcessGroup | None  # WP × SP of one replica and stage
    replica_group: dist.ProcessGroup | None  # DP × WP × SP of one stage

    def topology(self) -> ProcessTopology:
        return ProcessTopology(axes=["pipe", "data"], dims=[self.layout.pp, self.layout.replica])


WORLD_OF_ONE = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_own_world = False  # this process set WORLD_OF_ONE itself (no launcher)


def ensure_dist_env() -> bool:
    """Let a plain ``python -m aeris_ds.train`` run as a world of one without a launcher; True when it did."""
    if "RANK" in os.environ:
        return False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(dict(zip(WORLD_OF_ONE, ("0", "0", "1", "127.0.0.1", str(port)), strict=True)))
    return True


def init_distributed(attempts: int = 3) -> None:
    """DeepSpeed's process group. A world of one picks a port that is free when picked, not reserved: DeepSpeed
    loads its comm op before its store listens, and another process may take the port meanwhile, so it retries
    with another port."""
    import deepspeed

    global _own_world
    for attempt in range(attempts):
        own_port = ensure_dist_env()
        try:
            deepspeed.init_distributed(verbose=False)
            _own_world = own_port
            return
        except dist.DistNetworkError as err:
            if not own_port or attempt == attempts - 1 or "EADDRINUSE" not in str(err):
                raise
            for var in WORLD_OF_ONE:
                os.environ.pop(var)


def end_distributed() -> None:
    """Destroy the process group; a world of one set up here also takes its variables back, so a later run in
    the same process (a test, a notebook) does not reuse a stale port."""
    global _own_world
    if dist.is_initialized():
        dist.destroy_process_group()
    if _own_world:
        for var in WORLD_OF_ONE:
            os.environ.pop(var, None)
        _own_world = False


def validate_layout(layout: Layout, world: int, grid: WindowGrid, heads: int, depth: int) -> WindowGrid:
    """Every way a layout can fail to fit, as one clear error before any work starts.

    ``grid`` gives the geometry (its own WP/SP are ignored); returns it spread over the layout's WP × SP.
    """
    errors = []
    if layout.world != world:
        errors.append(f"layout {layout} has {layout.world} ranks but the world has {world}")
    if heads % layout.sp:
        errors.append(f"model.heads={heads} is not divisible by SP={layout.sp}")
    if depth + 2 < layout.pp:
        errors.append(f"{depth} blocks + embed + head cannot fill PP={layout.pp} stages")
    if errors:
        raise LayoutError("; ".join(errors))
    # WindowGrid checks windows over WP and tokens per window over SP.
    return WindowGrid(grid.lat, grid.lon, grid.window, layout.wp, layout.sp, grid.assignment, grid.lat_mode)


def init_parallel(layout: Layout) -> ParallelState:
    """Create the SP, WP×SP and replica groups; torch.distributed must already be initialised."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if layout.world != world:
        raise LayoutError(f"layout {layout} has {layout.world} ranks but the world has {world}")
    me = layout.coords(rank)
    groups: dict[str, dist.ProcessGroup | None] = {}
    for pp in range(layout.pp):
        for dp in range(layout.dp):
            window_ranks = [layout.rank(pp, dp, wp, sp) for wp in range(layout.wp) for sp in range(layout.sp)]
            g = dist.new_group(window_ranks)
            if rank in window_ranks:
                groups["window"] = g
            for wp in range(layout.wp):
                sp_ranks = [layout.rank(pp, dp, wp, sp) for sp in range(layout.sp)]
                g = dist.new_group(sp_ranks)
                if rank in sp_ranks:
                    groups["sp"] = g
        replica_ranks = [layout.rank(pp, dp, wp, sp) for dp in range(layout.dp)
                         for wp in range(layout.wp) for sp in range(layout.sp)]
        g = dist.new_group(replica_ranks)
        if rank in replica_ranks:
            groups["replica"] = g
    return ParallelState(layout, rank, me["pp"], me["dp"], me["wp"], me["sp"],
                         groups["sp"], groups["window"], groups["replica"])
