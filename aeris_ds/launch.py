"""The launchers' shared logic: validate a layout against nodes × devices, render the command, print a rank map.

    python -m aeris_ds.launch local  --nproc 4 --layout dp=1,pp=2,wp=2,sp=1 --config small --ds-config X.json
    python -m aeris_ds.launch aurora --nodes 2 --layout pp=2,wp=6,sp=2 --config C --ds-config X.json --submit

``launchers/local.sh`` and the batch scripts (``aurora.pbs``, ``slurm_cuda.sbatch``, ``lumi.sbatch``) call
this module; inside a batch job it renders the ``mpiexec``/``srun`` line and replaces itself with it.
``--submit`` (on a login node) validates first and only then calls ``qsub``/``sbatch``. ``--dry-run``
prints the command, its environment and the rank map, and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from aeris_ds.args import ArgumentParser, config_ref, ds_config_file, int_between, positive_int
from aeris_ds.config import REPO_ROOT, load_config, load_ds_config, parse_layout
from aeris_ds.errors import LayoutError, run_command
from aeris_ds.parallel.layout import Layout, WindowGrid
from aeris_ds.parallel.state import validate_layout

MASTER_PORT = 29500
# Aurora: 12 tiles per node, 8 cores per rank, cores 0 and 52 left to the OS (ALCF's recommended binding).
AURORA_CPU_BIND = "list:1-8:9-16:17-24:25-32:33-40:41-48:53-60:61-68:69-76:77-84:85-92:93-100"
# LUMI-G: the 7 usable cores of the CCD closest to GCD i, for local rank i (LUMI's documented map).
LUMI_CPU_MASKS = ("0xfe000000000000,0xfe00000000000000,0xfe0000,0xfe000000,0xfe,0xfe00,"
                  "0xfe00000000,0xfe0000000000")


@dataclass(frozen=True)
class Target:
    name: str
    devices_per_node: int
    script: str | None  # batch script under launchers/, None for local runs
    env: dict[str, str]


TARGETS = {
    "local": Target("local", 0, None, {"OMP_NUM_THREADS": "1"}),
    "aurora": Target("aurora", 12, "aurora.pbs", {
        "DS_ACCELERATOR": "xpu", "ZE_FLAT_DEVICE_HIERARCHY": "FLAT",  # each tile is one device
        "CCL_PROCESS_LAUNCHER": "pmix", "CCL_ATL_TRANSPORT": "mpi", "CCL_KVS_MODE": "mpi",
        "CCL_ALLREDUCE": "topo", "CCL_ZE_IPC_EXCHANGE": "pidfd", "FI_PROVIDER": "cxi",
        "FI_CXI_DEFAULT_CQ_SIZE": "131072", "FI_CXI_OVFLOW_BUF_SIZE": "8388608", "OMP_NUM_THREADS": "8"}),
    "slurm-cuda": Target("slurm-cuda", 4, "slurm_cuda.sbatch", {
        "DS_ACCELERATOR": "cuda", "NCCL_DEBUG": "WARN", "CUDA_DEVICE_MAX_CONNECTIONS": "1",
        "OMP_NUM_THREADS": "8"}),
    "lumi": Target("lumi", 8, "lumi.sbatch", {
        "DS_ACCELERATOR": "cuda",  # ROCm builds of torch expose the CUDA API
        "NCCL_SOCKET_IFNAME": "hsn0,hsn1,hsn2,hsn3", "NCCL_NET_GDR_LEVEL": "PHB",
        "FI_CXI_DISABLE_HOST_REGISTER": "1", "MIOPEN_USER_DB_PATH": "/tmp/miopen-$USER",
        "MIOPEN_CUSTOM_CACHE_DIR": "/tmp/miopen-$USER", "OMP_NUM_THREADS": "7"}),
}


@dataclass(frozen=True)
class Plan:
    target: str
    nodes: int
    per_node: int
    layout: Layout
    command: list[str]
    env: dict[str, str]
    hosts: list[str]

    def rank_map(self) -> list[dict]:
        """Rank → node, local rank and SWiPe coordinates (pipe outermost, sp innermost)."""
        return [{"rank": r, "node": self.hosts[r // self.per_node], "local": r % self.per_node,
                 **self.layout.coords(r)} for r in range(self.layout.world)]


def check_fit(layout: Layout, nodes: int, per_node: int, config: str, ds_config: str) -> None:
    """Raise before anything is submitted when the layout cannot run on nodes × devices or on the model."""
    if layout.world != nodes * per_node:
        raise LayoutError(f"layout {layout} needs dp·pp·wp·sp = {layout.world} ranks, but {nodes} node(s) × "
                         f"{per_node} device(s) = {nodes * per_node}")
    cfg = load_config(config, {"layout": layout.__dict__})
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, 1, 1, cfg.layout.window_assignment,
                      cfg.model.lat_mode)
    validate_layout(layout, layout.world, grid, cfg.model.heads, cfg.model.depth)
    load_ds_config(ds_config)


def train_args(args: argparse.Namespace) -> list[str]:
    # Every axis, so that a preset's own layout cannot add ranks the launcher did not count.
    layout = str(Layout(**parse_layout(args.layout)))
    return ["-m", "aeris_ds.train", "--config", args.config, "--layout", layout,
            "--deepspeed_config", args.ds_config, *args.train_args]


def hosts_of(target: str, nodes: int) -> list[str]:
    """Node names from the scheduler when inside a job, else placeholders."""
    names: list[str] = []
    if target == "aurora" and os.environ.get("PBS_NODEFILE"):
        names = list(dict.fromkeys(Path(os.environ["PBS_NODEFILE"]).read_text().split()))
    elif target != "local" and os.environ.get("SLURM_JOB_NODELIST"):
        out = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                             capture_output=True, text=True, check=False).stdout
        names = out.split()
    if target == "local":
        return ["localhost"]
    return names[:nodes] if len(names) >= nodes else [f"node{i}" for i in range(nodes)]


def render(args: argparse.Namespace) -> Plan:
    target = TARGETS[args.target]
    layout = Layout(**parse_layout(args.layout))
    nodes = 1 if args.target == "local" else args.nodes
    per_node = args.nproc if args.target == "local" else (args.gpus_per_node or target.devices_per_node)
    check_fit(layout, nodes, per_node, args.config, args.ds_config)
    hosts = hosts_of(args.target, nodes)
    world = layout.world
    env = {**target.env, "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                                 str(Path(sys.prefix) / "torch_extensions"))}
    py = args.python
    if args.target == "local":
        if args.launcher == "torchrun":
            cmd = ["torchrun", "--standalone", "--nproc_per_node", str(per_node), *train_args(args)]
        else:
            cmd = ["deepspeed", "--num_accelerators", str(per_node), "--master_port", str(args.master_port),
                   "--module", *train_args(args)[1:]]
        return Plan("local", 1, per_node, layout, cmd, env, hosts)
    env.update(MASTER_ADDR=hosts[0], MASTER_PORT=str(args.master_port), WORLD_SIZE=str(world))
    if args.target == "aurora":
        rank_env = "RANK=$PALS_RANKID LOCAL_RANK=$PALS_LOCAL_RANKID"
        launch = ["mpiexec", "-n", str(world), "-ppn", str(per_node), "--cpu-bind", AURORA_CPU_BIND,
                  "--envall"]
    else:
        rank_env = "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID"
        bind = f"--cpu-bind=mask_cpu:{LUMI_CPU_MASKS}" if args.target == "lumi" else "--cpu-bind=cores"
        # --kill-on-bad-exit: a rank that stops on an error ends the job instead of leaving the others waiting.
        launch = ["srun", "--kill-on-bad-exit=1", "--nodes", str(nodes), "--ntasks-per-node", str(per_node),
                  "--gpus-per-node", str(per_node), bind, "--export=ALL"]
    # The launcher gives each process its rank in its own variables; DeepSpeed reads RANK/LOCAL_RANK.
    cmd = [*launch, "bash", "-c", f'export {rank_env}; exec "$@"', "_", py, *train_args(args)]
    return Plan(args.target, nodes, per_node, layout, cmd, env, hosts)


def submit_command(args: argparse.Namespace, plan: Plan) -> list[str]:
    """qsub/sbatch of the target's batch script, its parameters passed as environment variables."""
    script = str(REPO_ROOT / "launchers" / TARGETS[args.target].script)
    params = {"NODES": str(plan.nodes), "LAYOUT": args.layout, "CONFIG": args.config, "DS_CONFIG": args.ds_config}
    if args.target == "aurora":
        account = ["-A", args.account] if args.account else []
        return ["qsub", *account, "-l", f"select={plan.nodes}", "-v", ",".join(f"{k}={v}" for k, v in params.items()),
                script]
    account = [f"--account={args.account}"] if args.account else []
    return ["sbatch", *account, f"--nodes={plan.nodes}", f"--gpus-per-node={plan.per_node}",
            f"--ntasks-per-node={plan.per_node}", "--export=ALL," + ",".join(f"{k}={v}" for k, v in params.items()),
            script]


def describe(plan: Plan, submit: list[str] | None = None, max_ranks: int = 64) -> str:
    """The dry-run report: submission, environment, command, rank map (first and last ranks when large)."""
    lines = [f"# {plan.target}: {plan.nodes} node(s) × {plan.per_node} device(s) = {plan.layout.world} ranks, "
             f"layout {plan.layout}"]
    if submit:
        lines += ["submit:", "  " + shlex.join(submit)]
    lines += ["environment:"] + [f"  {k}={v}" for k, v in sorted(plan.env.items())]
    lines += ["command:", "  " + shlex.join(plan.command), "rank map:", "  rank node local pp dp wp sp"]
    ranks = plan.rank_map()
    shown = ranks if len(ranks) <= max_ranks else ranks[: max_ranks // 2] + [None] + ranks[-max_ranks // 2:]
    for r in shown:
        lines.append(f"  … {len(ranks) - max_ranks} more ranks" if r is None else
                     f"  {r['rank']} {r['node']} {r['local']} {r['pp']} {r['dp']} {r['wp']} {r['sp']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="aeris_ds.launch", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--nodes", type=positive_int, default=1)
    parser.add_argument("--nproc", type=positive_int, default=1, help="local ranks (local target)")
    parser.add_argument("--gpus-per-node", type=positive_int, default=None, help="slurm-cuda: 4–8 (default 4)")
    parser.add_argument("--layout", required=True, type=_layout_text,
                        help="dp=N,pp=N,wp=N,sp=N (missing axes are 1)")
    parser.add_argument("--config", required=True, type=config_ref, help="preset name or YAML path")
    parser.add_argument("--ds-config", required=True, type=ds_config_file, help="DeepSpeed JSON")
    parser.add_argument("--launcher", choices=["torchrun", "deepspeed"], default="torchrun", help="local target")
    parser.add_argument("--master-port", type=int_between(1, 65535), default=MASTER_PORT)
    parser.add_argument("--python", default="python")
    parser.add_argument("--dry-run", action="store_true", default=bool(os.environ.get("DRY_RUN")))
    parser.add_argument("--submit", action="store_true", help="batch targets: validate, then qsub/sbatch")
    parser.add_argument("--account", default=None, help="project to charge (qsub -A / sbatch --account)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.train_args = argv[cut + 1:]  # after --: passed to aeris_ds.train unchanged
    return args


def _layout_text(text: str) -> str:
    parse_layout(text)  # passed on to the batch script and to train as text
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = render(args)
    submit = submit_command(args, plan) if args.submit and args.target != "local" else None
    if args.dry_run:
        print(describe(plan, submit))
        return 0
    if submit:
        return subprocess.run(submit, check=False).returncode
    env = {**os.environ, **{k: os.path.expandvars(v) for k, v in plan.env.items()}}
    os.execvpe(plan.command[0], plan.command, env)
    return 0  # not reached: exec replaced the process


if __name__ == "__main__":
    raise SystemExit(run_command(main))
