"""aeris-ds inside earth2studio (aeris_ds/interop/earth2studio.py): its workflows give what `aeris-ds forecast`
gives for the same weights, init times, seed and sampler; its data source gives the store's values."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from aeris_ds.config import SamplerConfig

# first: it imports earth2studio itself, ~5× faster than a plain import (see _import_earth2studio)
pytest.importorskip("aeris_ds.interop.earth2studio", reason="the earth2studio extra is not installed")

SAMPLER = SamplerConfig(steps=2, sigma_max=20.0, sigma_min=0.01)
PERTURBED = SAMPLER.model_copy(update={"init_perturbation": 0.2, "step_perturbation": 0.1})
SEED = 3


def _random_weights(store: Path, path: Path, objective: str) -> Path:
    """A tiny model with random weights (a briefly trained head is still near zero; random weights make every
    block shape the step), saved as training saves weights.pt."""
    from aeris_ds.config import load_config
    from aeris_ds.model.swin_dit import single_process_model
    from aeris_ds.weights import canonical, save_weights

    start = {"init_weights": "consistency.pt"} if objective == "crps_finetune" else {}  # recorded, not read
    cfg = load_config("tiny", {"data": {"store": str(store)}, "diffusion": {"objective": objective, **start}})
    model, _ = single_process_model(cfg)
    torch.manual_seed(0)
    params = {canonical(n): torch.randn_like(p) / p.shape[-1] ** 0.5 for n, p in model.named_parameters()}
    return save_weights({"params": params, "ema": params}, path,
                        {"config": cfg.model_dump(mode="json"), "objective": objective})


@pytest.fixture(scope="module")
def weights(tiny_store, tmp_path_factory) -> Path:
    return _random_weights(tiny_store, tmp_path_factory.mktemp("weights") / "weights.pt", "diffusion")


@pytest.fixture(scope="module")
def inits(tiny_store) -> np.ndarray:
    times = xr.open_zarr(tiny_store)["time"].values
    return times[[len(times) // 2, len(times) // 2 + 3]]


def _forecast(weights, store, out, inits, members, lead, sampler: SamplerConfig = SAMPLER) -> xr.Dataset:
    from aeris_ds.forecast.driver import run_forecast

    times = ",".join(np.datetime_as_string(t, unit="h") for t in inits)
    return xr.open_zarr(run_forecast(weights, store, out, times, members, lead, sampler, seed=SEED, progress=False))


def _assert_same(converted: xr.Dataset, forecast: xr.Dataset) -> None:
    """Every field at every lead and every coordinate of two WB2-layout forecasts agree (fields to 1e-5)."""
    assert sorted(converted.data_vars) == sorted(v for v in forecast.data_vars if v != "completed_steps")
    for name in converted.data_vars:
        a, b = converted[name], forecast[name]
        assert a.dims == b.dims, name
        for dim in a.dims:
            assert a[dim].dtype == b[dim].dtype, f"{name}: {dim}"
            np.testing.assert_array_equal(a[dim].values, b[dim].values, err_msg=f"{name}: {dim}")
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=0, err_msg=name)


def test_deterministic_workflow_equals_aeris_ds_forecast(weights, tiny_store, inits, tmp_path):
    from earth2studio import run
    from earth2studio.io import XarrayBackend

    from aeris_ds.interop.earth2studio import AERIS, AERISData, to_wb2

    model = AERIS.from_weights(weights, tiny_store, SAMPLER, seed=SEED)
    io = run.deterministic(list(inits[:1]), 3, model, AERISData(tiny_store, weights), XarrayBackend(),
                           device="cpu", verbose=False)
    e2s = io.root
    assert list(e2s["z500"].dims) == ["time", "lead_time", "lat", "lon"]
    np.testing.assert_array_equal(e2s["lead_time"].values, np.arange(4) * np.timedelta64(6, "h"))
    truth = xr.open_zarr(tiny_store)
    np.testing.assert_array_equal(e2s["z500"].values[0, 0],  # lead 0: the store's initial condition
                                  truth["geopotential"].sel(time=inits[0], level=500).values)
    fc = _forecast(weights, tiny_store, tmp_path / "fc.zarr", inits[:1], 1, "18h")
    assert np.abs(fc["geopotential"].values[0, -1, 0] - fc["geopotential"].values[0, 0, 0]).max() > 1.0, \
        "the steps must move the state"
    _assert_same(to_wb2(e2s), fc.isel(number=0))


@pytest.mark.parametrize("objective", ["consistency", "crps_finetune"])
def test_one_step_models_step_as_forecast_consistency_steps_1(objective, tiny_store, inits, tmp_path):
    """Weights of a one-step model take one consistency step by default, as `--consistency-steps 1`."""
    from earth2studio import run
    from earth2studio.io import XarrayBackend

    from aeris_ds.diffusion.consistency import ConsistencySampler
    from aeris_ds.forecast.driver import run_forecast
    from aeris_ds.interop.earth2studio import AERIS, to_wb2

    weights = _random_weights(tiny_store, tmp_path / "weights.pt", objective)
    model = AERIS.from_weights(weights, tiny_store, seed=SEED)
    e2s = run.deterministic(list(inits[:1]), 2, model, model.data_source(), XarrayBackend(), device="cpu",
                            verbose=False).root
    fc = run_forecast(weights, tiny_store, tmp_path / "fc.zarr", np.datetime_as_string(inits[0], unit="h"), 1, "12h",
                      ConsistencySampler(1), seed=SEED, progress=False)
    _assert_same(to_wb2(e2s), xr.open_zarr(fc).isel(number=0))


@pytest.mark.parametrize("sampler", [SAMPLER, PERTURBED], ids=["plain", "random-field perturbations"])
def test_ensemble_workflow_equals_forecast_members_and_scores_the_same(weights, tiny_store, inits, tmp_path,
                                                                       sampler):
    from earth2studio import run
    from earth2studio.io import ZarrBackend
    from earth2studio.perturbation import Zero

    from aeris_ds.cli import main
    from aeris_ds.interop.earth2studio import AERIS, AERISData, to_wb2

    model = AERIS.from_weights(weights, tiny_store, sampler, seed=SEED)
    run.ensemble(list(inits), 2, 3, model, AERISData(tiny_store, weights), ZarrBackend(str(tmp_path / "e2s.zarr")),
                 Zero(), device="cpu", verbose=False)
    to_wb2(xr.open_zarr(tmp_path / "e2s.zarr")).to_zarr(tmp_path / "converted.zarr")  # the README's one line
    converted = xr.open_zarr(tmp_path / "converted.zarr")
    fc = _forecast(weights, tiny_store, tmp_path / "fc.zarr", inits, 3, "12h", sampler)
    _assert_same(converted, fc)
    assert converted["geopotential"].std("number").mean() > 0, "members must differ"

    scores = {}
    for name in ("converted", "fc"):
        out = tmp_path / f"scores-{name}"
        main(["evaluate", str(tmp_path / f"{name}.zarr"), "--truth", str(tiny_store), "--out", str(out),
              "--variables", "geopotential", "2m_temperature", "--plots", "none", "--resamples", "50"])
        scores[name] = json.loads((out / "scores.json").read_text())
    numbers = [_numbers(scores[name]) for name in ("converted", "fc")]
    assert len(numbers[0]) > 50 and numbers[0].keys() == numbers[1].keys()
    for key, value in numbers[1].items():
        assert numbers[0][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


def _numbers(doc, path: str = "") -> dict[str, float]:
    """Every number in a scores.json, by its path."""
    if isinstance(doc, dict):
        return {k: v for key, sub in doc.items() for k, v in _numbers(sub, f"{path}/{key}").items()}
    if isinstance(doc, list):
        return {k: v for i, sub in enumerate(doc) for k, v in _numbers(sub, f"{path}/{i}").items()}
    return {path: float(doc)} if isinstance(doc, int | float) and not isinstance(doc, bool) else {}


def _reference(ds: xr.Dataset, name: str, level: int | None, time: np.datetime64) -> xr.DataArray:
    """The store's field put on the model grid by xarray alone: latitude ascending, longitude in [0, 360)."""
    field = ds[name].sel(time=time) if level is None else ds[name].sel(time=time, level=level)
    field = field.assign_coords(longitude=field["longitude"].values % 360)
    return field.sortby(["latitude", "longitude"]).transpose("latitude", "longitude")


@pytest.mark.parametrize("layout", ["ours", "wb2-crop", "wb2-pad"])
def test_data_source_returns_the_store_values(tiny_store, tmp_path, layout):
    """Our own store, and a WeatherBench2-layout one (both poles, latitude descending, longitude from −180) read
    through data.grid_adapt crop (drops the south pole) and pad (all of the store's rows)."""
    from wb2 import wb2_dataset, write_wb2

    from aeris_ds.config import load_config
    from aeris_ds.interop.earth2studio import AERISData

    if layout == "ours":
        store, config = tiny_store, load_config("tiny")
    else:
        store = write_wb2(wb2_dataset(descending=True, lon_180=True, days=2), tmp_path / "wb2.zarr")
        adapt = layout.split("-")[1]
        config = load_config("tiny", {"grid": {"lat": 32 if adapt == "crop" else 40, "lon": 64},
                                      "data": {"grid_adapt": adapt}})
    ds = xr.open_zarr(store)
    times = ds["time"].values[[0, 3, 5]]
    wanted = {"z500": ("geopotential", 500), "t850": ("temperature", 850), "u500": ("u_component_of_wind", 500),
              "t2m": ("2m_temperature", None), "msl": ("mean_sea_level_pressure", None)}
    got = AERISData(store, config)(times, list(wanted))
    assert got.dims == ("time", "variable", "lat", "lon") and got.dtype == np.float32
    assert list(got["variable"].values) == list(wanted)
    np.testing.assert_array_equal(got["time"].values, times)
    for t in times:
        for short, (name, level) in wanted.items():
            ref = _reference(ds, name, level, t)
            if layout == "wb2-crop":
                ref = ref.isel(latitude=slice(1, None))
            np.testing.assert_allclose(got["lat"].values, ref["latitude"].values, atol=1e-9)
            np.testing.assert_allclose(got["lon"].values, ref["longitude"].values, atol=1e-9)
            np.testing.assert_array_equal(got.sel(time=t, variable=short).values, ref.values.astype(np.float32),
                                          err_msg=f"{layout} {short} {t}")
    assert got.sizes["lat"] == {"ours": 16, "wb2-crop": 32, "wb2-pad": 33}[layout]


def _one_line(info: pytest.ExceptionInfo, *words: str) -> None:
    from aeris_ds.errors import UserError

    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_wrong_inputs_are_one_line_user_errors(weights, tiny_store, inits, tmp_path):
    from wb2 import wb2_dataset, write_wb2

    from aeris_ds.errors import ConfigError, DataError
    from aeris_ds.interop.earth2studio import AERIS, AERISData

    model = AERIS.from_weights(weights, tiny_store, SAMPLER)
    data = AERISData(tiny_store, weights)
    coords = model.input_coords()
    coords["time"] = inits[:1]
    coords.pop("batch")
    x = torch.from_numpy(data(inits[:1], coords["variable"]).values[:, None])

    extra = coords | {"variable": np.append(coords["variable"], "q700")}
    with pytest.raises(ConfigError) as info:
        model.output_coords(extra)
    _one_line(info, "has no variable(s) ['q700']", "z500")
    with pytest.raises(ConfigError) as info:
        model(x[:, :, :-1], coords | {"variable": coords["variable"][:-1]})
    _one_line(info, "needs variable(s) ['msl']")
    with pytest.raises(DataError) as info:
        model(x, coords | {"lat": np.linspace(-80, 80, 16)})
    _one_line(info, "lat of the input", "is not the grid")
    with pytest.raises(DataError) as info:
        model(x[..., :16], coords | {"lon": coords["lon"][:16]})
    _one_line(info, "lon of the input")

    with pytest.raises(DataError) as info:
        data(inits[:1], ["z500", "q700"])
    _one_line(info, "no variable(s) ['q700']")
    with pytest.raises(DataError) as info:
        data([np.datetime64("1900-01-01T00")], ["z500"])
    _one_line(info, "1900-01-01", "not in")
    wb2 = write_wb2(wb2_dataset(descending=True, lon_180=False, days=1), tmp_path / "wb2.zarr")
    with pytest.raises(DataError) as info:  # a 33×64 store for the 16×32 model
        AERISData(wb2, weights)
    _one_line(info, "33×64", "16×32")


def test_call_steps_like_the_iterator(weights, tiny_store, inits):
    """One __call__ from the physical fields of the iterator's first step equals its second step, up to the
    float32 rounding of those fields (the iterator carries the model's own state)."""
    from aeris_ds.interop.earth2studio import AERIS, AERISData

    model = AERIS.from_weights(weights, tiny_store, SAMPLER, seed=SEED, member=2)
    coords = model.input_coords()
    coords["batch"], coords["time"] = np.arange(2), inits
    x = torch.from_numpy(AERISData(tiny_store, weights)(inits, coords["variable"]).values[None, :, None])
    x = x.expand(2, *x.shape[1:]).contiguous()
    steps = model.create_iterator(x, coords)
    next(steps)
    x1, c1 = next(steps)
    x2, c2 = next(steps)
    y2, d2 = model(x1, c1)
    assert list(d2) == list(c2) and (d2["lead_time"] == c2["lead_time"]).all()
    torch.testing.assert_close(y2, x2, rtol=1e-4, atol=1e-2)
    assert not torch.equal(x2[0], x2[1]), "rows of a batch dim without an ensemble coordinate are members 2, 3"


def test_earth2studio_is_imported_only_by_interop():
    import aeris_ds

    root = Path(aeris_ds.__file__).parent
    importers = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "earth2studio" for n in names):
                importers.append(str(path.relative_to(root)))
    assert importers and all(p.startswith("interop/") for p in importers), importers


def test_readme_example_runs_as_written(weights, tiny_store, tmp_path, monkeypatch):
    """The README's example, verbatim, in a folder laid out as after the demo: the tiny weights as
    runs/demo/weights.pt, a synthetic store holding 2003-06-01 as data/heldsuarez.zarr."""
    import shutil

    from aeris_ds.data.schema import write_store
    from aeris_ds.data.stats import stats_path
    from aeris_ds.data.synthetic import synthetic_dataset
    from aeris_ds.grid import grid_latitudes, grid_longitudes

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Use in earth2studio", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "runs" / "demo" / "weights.pt")
    ds = synthetic_dataset(grid_latitudes(16), grid_longitudes(32), days=1)
    ds = ds.assign_coords(time=ds["time"].values + (np.datetime64("2003-05-31T18") - ds["time"].values[0]))
    ds.attrs = {}  # its split attributes name year-2000 times
    store = write_store(ds, tmp_path / "data" / "heldsuarez.zarr", inner_chunks={"latitude": 8, "longitude": 16})
    shutil.copy(stats_path(tiny_store), stats_path(store))
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    out = xr.open_zarr("runs/demo/e2s-forecast.zarr")
    assert dict(out["geopotential"].sizes) == {"time": 1, "prediction_timedelta": 10, "number": 4, "level": 2,
                                               "latitude": 16, "longitude": 32}
    assert np.isfinite(out["geopotential"].values).all()
    assert xr.open_zarr("runs/demo/e2s.zarr")["z500"].sizes["lead_time"] == 11
