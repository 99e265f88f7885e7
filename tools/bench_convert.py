"""Cost of the universal conversion: a preset's model shapes (depth overridable) trained one step on one
process (ZeRO-1, fp32) on a tiny synthetic store, saved by DeepSpeed, then converted; prints sizes, times and
the conversion's time against a plain copy of the checkpoint (the baseline measured in the same run).

    python tools/bench_convert.py --preset small
    python tools/bench_convert.py --preset aeris-1.3b --depth 2    # then --depth 4: cost per block

Windows are those of the tiny store (8×8) and its channels are fewer than a real store's: both change the
input/output layers only, a small part of the parameters.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from aeris_ds import elastic
from aeris_ds.checkpoint import latest_tag
from aeris_ds.config import load_config, load_ds_config
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import compute_stats, save_stats
from aeris_ds.data.synthetic import synthetic_store
from aeris_ds.train import run


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--depth", type=int, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        store = synthetic_store(work / "tiny.zarr", days=2)
        save_stats(compute_stats(WeatherSource(store, load_config("tiny").data, "train"), progress=False), store)
        model = load_config(args.preset).model.model_dump()
        model.update(window=[8, 8], checkpoint_activations=False, **({"depth": args.depth} if args.depth else {}))
        cfg = load_config("tiny", {"data": {"store": str(store)}, "model": model,
                                   "train": {"out_dir": str(work / "run"), "steps": 1}})
        ds = load_ds_config("ds_configs/zero1_fp32.json")
        ds["train_micro_batch_size_per_gpu"] = 1
        tick = time.time()
        run(cfg, ds)
        trained = time.time() - tick
        ckpt = work / "run" / "checkpoints"
        tag = ckpt / latest_tag(ckpt)
        tick = time.time()
        shutil.copytree(tag, work / "copy")
        copy = time.time() - tick
        tick = time.time()
        out = elastic.convert(tag)
        seconds = time.time() - tick
        params = sum(1 for p in (out / "zero").iterdir() if p.is_dir())
        numel = sum(torch.load(p / "fp32.pt", weights_only=False)["param"].numel()
                    for p in (out / "zero").iterdir() if p.is_dir())
        print(json.dumps({"preset": args.preset, "depth": model["depth"], "parameters": numel, "tensors": params,
                          "checkpoint_bytes": _size(tag), "universal_bytes": _size(out), "convert_s": round(seconds, 2),
                          "copy_s": round(copy, 2), "convert_over_copy": round(seconds / copy, 2),
                          "train_and_save_s": round(trained, 2),
                          "convert_GB_per_s": round(_size(out) / seconds / 1e9, 3)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
