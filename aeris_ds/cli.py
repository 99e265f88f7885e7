"""The `aeris-ds` command: one entry point for every stage of the workflow.

    aeris-ds info --config aeris-40b          parameters, FLOPs, memory per rank, layout (nothing allocated)
    aeris-ds data heldsuarez --out PATH       generate the embedded Held–Suarez dataset
    aeris-ds data stats --store PATH          normalization statistics of the training split
    aeris-ds data verify STORE                read every chunk; report each damaged one
    aeris-ds ingest FILE... --out STORE       ERA5 GRIB/netCDF → WeatherBench2-schema zarr
    aeris-ds rechunk SRC DST [--config YAML]  whole-globe chunks (WB2 stores) → our sharded layout
    aeris-ds train --config small             train (also under `deepspeed` / `torchrun`)
    aeris-ds checkpoint convert RUN           layout-independent (universal) form of the last checkpoint
    aeris-ds forecast --weights W --lead 10d  ensemble rollouts streamed to zarr
    aeris-ds evaluate FORECAST --truth STORE  WeatherBench2 scorecard and plots
    aeris-ds plan --model 40b --nodes N       rank SWiPe layouts by predicted throughput
    aeris-ds demo                             the README's main job: data → train → forecast → scores
"""

from __future__ import annotations

import importlib

from aeris_ds.args import ArgumentParser, config_ref, existing_path
from aeris_ds.errors import ConfigError, run_command

# Subcommand → module whose main(argv) runs it; imported lazily so `aeris-ds info` stays light.
COMMANDS = {
    "train": "aeris_ds.train",
    "forecast": "aeris_ds.forecast.driver",
    "evaluate": "aeris_ds.evaluate.cli",
    "ingest": "aeris_ds.data.ingest",
    "rechunk": "aeris_ds.data.rechunk",
    "plan": "aeris_ds.perf.plan",
    "demo": "aeris_ds.demo",
    "checkpoint": "aeris_ds.checkpoint",
}


def info(argv: list[str]) -> None:
    from aeris_ds.config import load_config, parse_layout

    p = ArgumentParser(prog="aeris-ds info")
    p.add_argument("--config", default="small", type=config_ref, help="preset name or YAML path")
    p.add_argument("--layout", default=None, type=parse_layout, help="e.g. pp=20,wp=36,sp=12")
    args = p.parse_args(argv)
    from aeris_ds.describe import describe

    print(describe(load_config(args.config, {"layout": args.layout} if args.layout else {})))


DATA_USAGE = """usage: aeris-ds data {heldsuarez,stats,verify} ...

    aeris-ds data heldsuarez --out PATH              generate the embedded Held–Suarez dataset
    aeris-ds data stats --store PATH --config NAME   normalization statistics of the training split
    aeris-ds data verify STORE                       read every chunk, naming each damaged one

`aeris-ds data SUBCOMMAND --help` lists each one's options."""


def data(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print(DATA_USAGE)
        return
    if not argv or argv[0] not in ("heldsuarez", "stats", "verify"):
        got = f"unknown data command {argv[0]!r}" if argv else "a data command is needed"
        raise ConfigError(f"{got}: one of heldsuarez, stats, verify (aeris-ds data --help)")
    if argv[0] == "heldsuarez":
        from aeris_ds.data import heldsuarez

        return heldsuarez.main(argv[1:])
    if argv[0] == "verify":
        from aeris_ds.data import verify

        return verify.main(argv[1:])
    p = ArgumentParser(prog="aeris-ds data stats")
    p.add_argument("--store", required=True, type=existing_path)
    p.add_argument("--config", default="small", type=config_ref,
                   help="preset or YAML naming the variables and levels")
    p.add_argument("--overwrite", action="store_true", help="replace the store's existing stats")
    args = p.parse_args(argv[1:])
    from aeris_ds.config import load_config
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import KIND, compute_stats, save_stats, stats_path
    from aeris_ds.outputs import check_output

    cfg = load_config(args.config)
    check_output(stats_path(args.store, cfg.data.stats), KIND, inputs=[args.store], overwrite=args.overwrite)
    source = WeatherSource(args.store, cfg.data, cfg.data.train_split, grid=(cfg.grid.lat, cfg.grid.lon))
    print(save_stats(compute_stats(source), args.store, cfg.data.stats))


def dispatch(argv: list[str]) -> int | None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command == "info":
        return info(rest)
    if command == "data":
        return data(rest)
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}; one of: info, data, {', '.join(COMMANDS)}")
    return importlib.import_module(COMMANDS[command]).main(rest)


def main(argv: list[str] | None = None) -> None:
    """Every command: user errors end in one line ``error: …`` and a non-zero exit (``--debug``: traceback)."""
    code = run_command(dispatch, argv)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
