"""Shared test fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

# Real ERA5 samples ship inside the cfgrib source distribution; fetch it once from the package
# registry into a cache outside the repository.
# DeepSpeed JIT-builds a CPU comm op on first init: keep the build inside the venv so it happens once.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
CACHE = Path(os.environ.get("AERIS_TEST_CACHE", Path.home() / ".cache" / "aeris-ds-tests"))
CFGRIB_SDIST = "cfgrib==0.9.15.1"


@pytest.fixture(autouse=True)
def _environment_restored():
    """A test that runs a command in-process may set RANK, MASTER_PORT, …: later tests (and the subprocesses
    they start) must not inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _fetch_cfgrib_sample(name: str) -> Path:
    target = CACHE / name
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
         "-d", str(CACHE), CFGRIB_SDIST],
        check=True,
    )
    sdist = next(CACHE.glob("cfgrib-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"/{name}"))
        data = tar.extractfile(member).read()
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


@pytest.fixture(scope="session")
def era5_grib_path() -> Path:
    """Real ERA5 GRIB: 10 EDA members, z and t at 500/850 hPa, 4 times, 3° grid (61×120)."""
    return _fetch_cfgrib_sample("era5-levels-members.grib")


@pytest.fixture(scope="session")
def era5_nc_path() -> Path:
    """The netCDF twin of ``era5-levels-members.grib``."""
    return _fetch_cfgrib_sample("era5-levels-members.nc")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A 16×32 synthetic store in the WeatherBench2 schema, with its normalization stats."""
    from aeris_ds.config import load_config
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_store

    path = synthetic_store(tmp_path_factory.mktemp("data") / "tiny.zarr")
    cfg = load_config("tiny")
    save_stats(compute_stats(WeatherSource(path, cfg.data, "train"), progress=False), path)
    return path
