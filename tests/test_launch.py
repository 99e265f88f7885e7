"""Launcher dry-runs: rank counts, environment, commands and rank maps of every launcher; bad layouts."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aeris_ds import launch
from aeris_ds.errors import run_command
from aeris_ds.parallel.layout import Layout

REPO = Path(__file__).resolve().parent.parent
DS = "ds_configs/zero1_fp32.json"


def _dry(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    cmd = ["bash", str(REPO / "launchers" / script), *args]
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120)


def _section(out: str, name: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index(f"{name}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return [line.strip() for line in lines[start:end]]


def _rank_map(out: str) -> list[list[str]]:
    return [row.split() for row in _section(out, "rank map")[1:]]


def _check_rank_map(rows: list[list[str]], layout: Layout, per_node: int) -> None:
    """Independent of Layout.coords: sp varies fastest, then wp, dp, and pp slowest."""
    assert len(rows) == layout.world
    for rank, row in enumerate(rows):
        r, _, local, pp, dp, wp, sp = row
        assert int(r) == rank and int(local) == rank % per_node
        assert int(sp) == rank % layout.sp
        assert int(wp) == rank // layout.sp % layout.wp
        assert int(dp) == rank // (layout.sp * layout.wp) % layout.dp
        assert int(pp) == rank // (layout.sp * layout.wp * layout.dp)


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_launch_local_dry_run(launcher):
    res = _dry("local.sh", "--nproc", "4", "--layout", "dp=1,pp=2,wp=2,sp=1", "--config", "small",
               "--ds-config", DS, "--launcher", launcher, "--dry-run", "--", "--steps", "3")
    assert res.returncode == 0, res.stderr
    (cmd,) = _section(res.stdout, "command")
    argv = shlex.split(cmd)
    tail = ["aeris_ds.train", "--config", "small", "--layout", "dp=1,pp=2,wp=2,sp=1", "--deepspeed_config", DS,
            "--steps", "3"]
    if launcher == "torchrun":
        assert argv[:4] == ["torchrun", "--standalone", "--nproc_per_node", "4"]
    else:
        assert argv[:3] == ["deepspeed", "--num_accelerators", "4"] and "--module" in argv
    assert argv[-len(tail):] == tail
    env = dict(line.split("=", 1) for line in _section(res.stdout, "environment"))
    assert env["OMP_NUM_THREADS"] == "1" and env["TORCH_EXTENSIONS_DIR"]
    _check_rank_map(_rank_map(res.stdout), Layout(1, 2, 2, 1), 4)


@pytest.mark.parametrize("script,target,nodes,per_node,layout,config,rank_vars", [
    ("aurora.pbs", "aurora", 2, 12, "pp=2,wp=6,sp=2", "aeris-1.3b", "RANK=$PALS_RANKID LOCAL_RANK=$PALS_LOCAL_RANKID"),
    ("slurm_cuda.sbatch", "slurm-cuda", 2, 4, "pp=2,wp=4", "small", "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID"),
    ("lumi.sbatch", "lumi", 2, 8, "dp=2,wp=4,sp=2", "small", "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID"),
])
def test_launch_batch_dry_run(script, target, nodes, per_node, layout, config, rank_vars):
    res = _dry(script, env={"DRY_RUN": "1", "NODES": str(nodes), "LAYOUT": layout, "CONFIG": config,
                            "DS_CONFIG": DS, "TRAIN_ARGS": "--steps 7"})
    assert res.returncode == 0, res.stderr
    world = nodes * per_node
    assert f"{nodes} node(s) × {per_node} device(s) = {world} ranks" in res.stdout
    (cmd,) = _section(res.stdout, "command")
    argv = shlex.split(cmd)
    if target == "aurora":
        assert argv[:5] == ["mpiexec", "-n", str(world), "-ppn", str(per_node)]
        assert argv[argv.index("--cpu-bind") + 1].count(":") == 12  # one core list per tile
    else:
        assert argv[0] == "srun" and argv[argv.index("--ntasks-per-node") + 1] == str(per_node)
        bind = next(a for a in argv if a.startswith("--cpu-bind"))
        assert bind.count("0x") == 8 if target == "lumi" else bind == "--cpu-bind=cores"
    assert f"export {rank_vars}" in cmd
    assert argv[-4:] == ["--deepspeed_config", DS, "--steps", "7"]
    env = dict(line.split("=", 1) for line in _section(res.stdout, "environment"))
    assert env["WORLD_SIZE"] == str(world) and env["MASTER_ADDR"] == "node0"
    assert env["DS_ACCELERATOR"] == {"aurora": "xpu"}.get(target, "cuda")
    if target == "aurora":
        assert env["ZE_FLAT_DEVICE_HIERARCHY"] == "FLAT" and env["CCL_ATL_TRANSPORT"] == "mpi"
    rows = _rank_map(res.stdout)
    _check_rank_map(rows, Layout(**{**{"dp": 1, "pp": 1, "wp": 1, "sp": 1},
                                    **{k: int(v) for k, v in (a.split("=") for a in layout.split(","))}}), per_node)
    assert [row[1] for row in rows] == [f"node{r // per_node}" for r in range(world)]


def test_launch_rejects_layout_that_does_not_fit():
    res = _dry("local.sh", "--nproc", "2", "--layout", "pp=2,wp=2", "--config", "small", "--ds-config", DS,
               "--dry-run")
    assert res.returncode == 2
    assert "needs dp·pp·wp·sp = 4 ranks, but 1 node(s) × 2 device(s) = 2" in res.stderr
    assert "command:" not in res.stdout
    res = _dry("lumi.sbatch", env={"DRY_RUN": "1", "NODES": "3", "LAYOUT": "wp=16", "CONFIG": "small",
                                   "DS_CONFIG": DS})
    assert "16 ranks, but 3 node(s) × 8 device(s) = 24" in res.stderr


def test_launch_rejects_layout_the_model_cannot_take():
    args = launch.parse_args(["slurm-cuda", "--nodes", "2", "--gpus-per-node", "4", "--layout", "sp=8",
                              "--config", "small", "--ds-config", DS])
    with pytest.raises(ValueError, match="model.heads=4 is not divisible by SP=8"):
        launch.render(args)


def test_launch_submit_command_validates_first(capsys):
    code = launch.main(["aurora", "--nodes", "2", "--layout", "pp=2,wp=6,sp=2", "--config", "aeris-1.3b",
                        "--ds-config", DS, "--submit", "--account", "proj", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    (submit,) = _section(out, "submit")
    argv = shlex.split(submit)
    assert argv[:5] == ["qsub", "-A", "proj", "-l", "select=2"] and argv[-1].endswith("launchers/aurora.pbs")
    assert "LAYOUT=pp=2,wp=6,sp=2" in argv[argv.index("-v") + 1]
    # A layout that does not fit is refused before any qsub.
    code = run_command(launch.main, ["aurora", "--nodes", "3", "--layout", "pp=2,wp=6,sp=2", "--config",
                                     "aeris-1.3b", "--ds-config", DS, "--submit", "--dry-run"])
    assert code == 2 and "qsub" not in capsys.readouterr().out


def test_launch_large_rank_map_is_abridged():
    args = launch.parse_args(["aurora", "--nodes", "10080", "--layout", "dp=14,pp=20,wp=36,sp=12",
                              "--config", "aeris-40b", "--ds-config", "ds_configs/aeris_40b_aurora.json"])
    text = launch.describe(launch.render(args))
    assert "120960 ranks" in text and "… 120896 more ranks" in text
    assert text.rstrip().splitlines()[-1].split() == ["120959", "node10079", "11", "19", "13", "35", "11"]
