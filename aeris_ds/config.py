"""Experiment configuration: one YAML validated by a typed schema.

The DeepSpeed JSON (batch sizes, optimizer, LR schedule, ZeRO stage, precision) stays a plain DeepSpeed
config in ds_configs/; everything that is ours (model, grid, data, diffusion, layout, steps) lives here.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aeris_ds.data.grid_adapt import GridAdapt
from aeris_ds.data.splits import parse_range
from aeris_ds.errors import ArgumentValueError, ConfigError, MissingPathError
from aeris_ds.parallel.layout import Layout

PRESET_DIR = Path(__file__).parent / "presets"
REPO_ROOT = Path(__file__).resolve().parent.parent


class Strict(BaseModel):
    """Unknown keys are an error: a typo in a YAML must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    dim: int = Field(128, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    mlp_hidden: int | None = Field(None, description="SwiGLU hidden width; default 8/3·dim rounded to 64")
    window: tuple[int, int] = (8, 8)
    lat_mode: Literal["mask", "roll"] = Field(
        "mask", description="shifted windows: cyclic in longitude; latitude masked at the poles or rolled"
    )
    pos_freqs: int = Field(4, ge=1, description="sinusoidal frequencies per axis of the position encoding")
    noise_freqs: int = Field(64, ge=1, description="Fourier features of the noise level")
    checkpoint_activations: bool = False

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.dim % self.heads:
            raise ValueError(f"model.dim={self.dim} is not divisible by model.heads={self.heads}")
        head_dim = self.dim // self.heads
        if head_dim % 4:
            raise ValueError(f"head dim {head_dim} must be divisible by 4 for 2D axial RoPE")
        return self

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 64 * max(1, round(8 * self.dim / 3 / 64))


class GridConfig(Strict):
    lat: int = Field(32, gt=0)
    lon: int = Field(64, gt=0)


class DataConfig(Strict):
    store: str | None = Field(None, description="WeatherBench2-schema zarr; None = the embedded Held–Suarez data")
    stats: str | None = Field(
        None, description="normalization stats JSON (`aeris-ds data stats` writes it); None = STORE.stats.json "
                          "beside the store")
    atmospheric: list[str] = ["geopotential", "temperature", "u_component_of_wind", "v_component_of_wind"]
    surface: list[str] = ["2m_temperature", "mean_sea_level_pressure"]
    levels: list[int] = [250, 500, 850]
    lead_hours: int = Field(6, gt=0)
    train_split: str = "train"
    splits: dict[str, str] = Field(
        {}, description='time ranges "START/END" (inclusive) by split name; else the store\'s split_<name> attrs')
    grid_adapt: GridAdapt = Field(
        "none", description="store rows → grid.lat rows: none, drop_poles, crop or pad (data/grid_adapt.py)")
    forcings: list[Literal["toa_solar", "statics", "time"]] = ["toa_solar", "time"]
    workers: int = Field(1, ge=0, description="prefetch worker processes per rank")
    preload: bool = Field(False, description="hold this rank's block of the training split in memory")

    @model_validator(mode="after")
    def _check_splits(self) -> DataConfig:
        for spec in self.splits.values():
            parse_range(spec)
        return self

    @property
    def channel_names(self) -> list[str]:
        atm = [f"{v}_{lev}" for v in self.atmospheric for lev in self.levels]
        return atm + list(self.surface)

    @property
    def n_channels(self) -> int:
        return len(self.atmospheric) * len(self.levels) + len(self.surface)

    @property
    def n_forcings(self) -> int:
        sizes = {"toa_solar": 1, "statics": 2, "time": 4}
        return sum(sizes[f] for f in self.forcings)


class DiffusionConfig(Strict):
    """Training noise levels τ (in units of the tendency's std) and loss weights."""

    sigma_min: float = Field(0.2, gt=0)
    sigma_max: float = Field(500.0, gt=0)
    sigma_d: float = Field(1.0, gt=0)
    noise_distribution: Literal["log_uniform", "log_normal"] = Field(
        "log_uniform", description="τ log-uniform in [sigma_min, sigma_max] (AERIS), or log τ ~ N(p_mean, p_std²) "
        "redrawn until inside that range (EDM): more weight on the middle levels")
    p_mean: float = -1.2
    p_std: float = Field(1.2, gt=0)
    variable_weights: dict[str, float] = {}
    level_weighting: Literal["pressure", "uniform"] = "pressure"
    objective: Literal["diffusion", "consistency", "crps_finetune"] = Field(
        "diffusion", description="diffusion: TrigFlow v-prediction; consistency: sCM (diffusion/consistency.py); "
        "crps_finetune: fair CRPS of one-step consistency rollouts (diffusion/crps.py)")
    init_weights: str | None = Field(
        None, description="weights.pt to start from (e.g. the diffusion model a consistency model is trained from)")
    consistency_dt: float = Field(0.01, gt=0, lt=0.1, description="Δt of the finite-difference tangent")
    consistency_norm_c: float = Field(0.1, gt=0, description="c of the tangent normalisation g/(rms g + c)")
    consistency_warmup: int = Field(0, ge=0, description="steps over which the tangent's r ramps 0 → 1")
    crps_steps: int = Field(4, ge=1, description="crps_finetune: lead steps K of each rollout")
    crps_members: int = Field(2, ge=2, description="crps_finetune: ensemble members M per sample")
    scale_weights: list[Annotated[float, Field(ge=0)]] = Field(
        [], description="loss weight of the error's 2-, 4-, 8-… pixel scales inside each window (Haar levels, "
        "finest first; coarser scales keep 1): [] is the plain MSE, [2] doubles the finest scale's weight")
    noise_spectrum: float = Field(
        0.0, ge=0, le=1, description="noise coloured per spherical-harmonic degree like the training tendencies' "
        "power raised to this exponent (diffusion/colored_noise.py): 0 white noise, 1 the tendencies' own spectrum; "
        "needs a Gaussian grid")

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"diffusion.sigma_min={self.sigma_min} must be < sigma_max={self.sigma_max}")
        if self.objective == "crps_finetune" and self.scale_weights:
            raise ValueError("diffusion.scale_weights weights the denoising loss; crps_finetune has none")
        if self.objective == "crps_finetune" and not self.init_weights:
            raise ValueError("objective crps_finetune fine-tunes a consistency model: set diffusion.init_weights")
        if self.noise_spectrum and self.objective != "diffusion":
            raise ValueError(f"diffusion.noise_spectrum colours the diffusion's noise; objective {self.objective} "
                             "draws white noise")
        return self

    @property
    def rollout_steps(self) -> int:
        """Lead steps after a training sample's initial state that it holds the truth of."""
        return self.crps_steps if self.objective == "crps_finetune" else 1


class SamplerConfig(Strict):
    """Forecast sampler (aeris_ds.diffusion.sampler): Karras σ schedule, DPM-Solver++(2S), optional churn.

    The schedule runs from sigma_max down to sigma_min in ``steps`` levels, then one denoising step to 0: what
    an imperfect last step leaves is of order sigma_min, so sigma_min decides the residual small-scale noise.
    """

    steps: int = Field(10, ge=1, description="noise levels; 2·steps − 1 network evaluations")
    sigma_max: float = 500.0
    sigma_min: float = 0.2
    rho: float = Field(7.0, gt=0)
    churn: float = Field(0.0, ge=0, description="S_churn: re-noise by γ = min(churn/steps, √2 − 1) in [s_tmin, s_tmax]")
    s_tmin: float = Field(0.0, ge=0)
    s_tmax: float = math.inf
    s_noise: float = Field(1.0, ge=0, description="scale of the churn noise (> 1 inflates it)")
    project: bool = Field(False, description="project each step's state onto the spherical harmonics the data "
                          "resolve (the store's spectral_truncation attr): no power at scales the data cannot carry")
    init_perturbation: float = Field(
        0.0, ge=0, description="members start from the initial state ± this × (x_a − x_b)/√2, x_a and x_b two "
        "training-split states drawn per member pair (random-field perturbations): 0 starts every member from it")
    step_perturbation: float = Field(
        0.0, ge=0, description="the same random-field perturbation, drawn anew, added to the input of every "
        "later step (additive inflation for model error the network does not represent; the forecast written is "
        "the network's output, so it carries only perturbations it has evolved); 0: none")

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        if not 0.0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"sampler needs 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
        return self

    @property
    def model_evaluations(self) -> int:
        """Network evaluations per sample call: 2 per 2S step, 1 for the final step to σ = 0."""
        return 2 * self.steps - 1


class LayoutConfig(Strict):
    dp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    wp: int = Field(1, ge=1)
    sp: int = Field(1, ge=1)
    window_assignment: Literal["blocks", "round_robin"] = "blocks"
    shift_exchange: Literal["folded", "halo"] = Field(
        "folded", description="folded: shift re-layout inside the attention all-to-all; halo: separate roll step"
    )

    def as_layout(self) -> Layout:
        return Layout(dp=self.dp, pp=self.pp, wp=self.wp, sp=self.sp)


class TrainConfig(Strict):
    steps: int = Field(100, ge=0)
    seed: int = 0
    ema_decay: float = Field(0.999, ge=0, lt=1, description="constant EMA decay (when ema_length is not set)")
    ema_length: float | None = Field(None, gt=0, le=0.28, description="power-function EMA (EDM2): its width as "
                                     "a fraction of the steps so far (relative std σ_rel, e.g. 0.1), on any step count")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end")
    out_dir: str = "runs/default"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    ds_config: str = "ds_configs/zero1_fp32.json"
    max_minutes: float | None = Field(None, gt=0, description="wall-time budget, start-up included: the step count "
                                      "is fixed from the measured step time so the LR schedule ends with it "
                                      "(aeris_ds/budget.py); steps is then a cap")
    resume_from: str | None = Field(None, description="run folder or checkpoint tag to start from when out_dir "
                                    "has none; any layout or ZeRO stage")
    bf16: Literal["auto"] | bool | None = Field(None, description="bf16 weights and activations with fp32 master "
                                                "weights (DeepSpeed's bf16 section): true, false, unset (as the "
                                                "DeepSpeed config says) or auto (a DeepSpeed config with a bf16 or "
                                                "fp16 section decides; else bf16 where the device computes it "
                                                "natively)")
    compile: bool = Field(False, description="torch.compile each Swin block: fused elementwise kernels, same maths; "
                          "forecasts from these weights compile too (aeris-ds forecast --no-compile)")


class ExperimentConfig(Strict):
    name: str = "default"
    model: ModelConfig = ModelConfig()
    grid: GridConfig = GridConfig()
    data: DataConfig = DataConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    sampler: SamplerConfig = Field(SamplerConfig(), description="the forecast's defaults for these weights")
    layout: LayoutConfig = LayoutConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_windows(self) -> ExperimentConfig:
        wh, ww = self.model.window
        if self.grid.lat % wh or self.grid.lon % ww:
            raise ValueError(
                f"grid {self.grid.lat}×{self.grid.lon} is not divisible by window {wh}×{ww}"
            )
        if wh % 2 or ww % 2:
            raise ValueError(f"window {wh}×{ww} must be even in both axes (shift by half a window)")
        side, sp = 2 ** len(self.diffusion.scale_weights), self.layout.sp
        if side > 1 and (wh % sp or (wh // sp) % side or ww % side):
            raise ValueError(f"diffusion.scale_weights has {len(self.diffusion.scale_weights)} "
                             f"levels: each rank's rows of a window ({wh}/SP={sp} × {ww}) must divide into "
                             f"{side}×{side} blocks")
        return self

    @property
    def in_channels(self) -> int:
        """Network input per token: noisy tendency, current state, forcings."""
        return 2 * self.data.n_channels + self.data.n_forcings


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_path(name_or_path: str | Path) -> Path:
    """The YAML of a preset name or path; a named error when there is none."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise MissingPathError(f"config {str(name_or_path)!r} not found (presets: {', '.join(presets)})")
    return path


def load_config(name_or_path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Load a preset by name (``tiny``, ``small``, ``aeris-1.3b``…) or a YAML path, then apply overrides."""
    path = config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model, data, …), got {type(raw).__name__}")
    raw = _merge(raw, overrides or {})
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid config {path}: {problems}") from None


def ds_config_path(path: str | Path) -> Path:
    """A DeepSpeed JSON path as given, else relative to the repository (the presets name ds_configs/…)."""
    candidate = Path(path)
    if not candidate.is_file() and (REPO_ROOT / candidate).is_file():
        candidate = REPO_ROOT / candidate
    if not candidate.is_file():
        raise MissingPathError(f"DeepSpeed config {path} not found")
    return candidate


def load_ds_config(path: str | Path) -> dict:
    """Read a DeepSpeed JSON and validate it with DeepSpeed's own config classes, before any engine starts:
    a wrong key or value is one line naming the file, the key and what is allowed."""
    candidate = ds_config_path(path)
    try:
        config = json.loads(candidate.read_text(), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: must be a JSON object, got {type(config).__name__}")
    check_ds_config(config, str(path))
    return config


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:  # json would keep the last silently; DeepSpeed's own loader refuses them too
        raise ValueError(f"duplicate key {repeated[0]!r}")
    return dict(pairs)


PositiveInt = Annotated[int, Field(gt=0, strict=True)]


class _NamedSection(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Annotated[str, Field(strict=True)]
    params: dict = {}


class _DeepSpeedTopLevel(BaseModel):
    """What DeepSpeed reads from the top level without checking its type (it would fail later, deep in the
    engine, or be compared as a string); its sections are checked by its own classes (_ds_sections)."""

    model_config = ConfigDict(extra="allow")
    train_batch_size: PositiveInt | None = None
    train_micro_batch_size_per_gpu: PositiveInt | None = None
    gradient_accumulation_steps: PositiveInt | None = None
    gradient_clipping: Annotated[float, Field(ge=0, strict=True)] = 0.0
    steps_per_print: PositiveInt | None = None
    optimizer: _NamedSection | None = None
    scheduler: _NamedSection | None = None
    zero_optimization: dict | None = None  # the legacy boolean form is refused: DeepSpeed only warns about it
    bf16: dict | None = None
    fp16: dict | None = None
    pipeline: dict | None = None
    activation_checkpointing: dict | None = None
    flops_profiler: dict | None = None
    checkpoint: dict | None = None
    data_types: dict | None = None
    comms_logger: dict | None = None
    autotuning: dict | None = None


def _ds_sections() -> dict[str, type[BaseModel]]:
    """DeepSpeed's pydantic class of each section (imported here: importing deepspeed takes seconds)."""
    from deepspeed.monitor.config import CometConfig, CSVConfig, TensorBoardConfig, WandbConfig
    from deepspeed.runtime.config import CompileConfig, HybridEngineConfig
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    return {"zero_optimization": DeepSpeedZeroConfig, "bf16": DeepSpeedBF16Config, "fp16": DeepSpeedFP16Config,
            "compile": CompileConfig, "hybrid_engine": HybridEngineConfig, "tensorboard": TensorBoardConfig,
            "wandb": WandbConfig, "csv_monitor": CSVConfig, "comet": CometConfig}


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return sorted({n for name, f in model.model_fields.items() for n in (name, f.alias) if n})


def _problem(err: ValidationError, section: str = "", model: type[BaseModel] | None = None) -> str:
    """The first error of a pydantic validation as ``key.path: message (got value)``, with what is allowed."""
    e = err.errors()[0]
    key = ".".join(str(p) for p in (section, *e["loc"]) if p != "")
    if e["type"] == "extra_forbidden" and model is not None:
        allowed = _allowed_keys(model)
        close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
        return f"{key}: unknown key (" + (f"did you mean {close[0]}?)" if close else f"allowed: {', '.join(allowed)})")
    message = e["msg"]
    if e["type"] in ("model_type", "dict_type"):  # pydantic names its class: meaningless in a JSON file
        message = "Input should be a JSON object"
    if e["type"] == "enum":  # DeepSpeed's stage enum has an alias: "0, 1, 2, 3 or 3"
        choices = list(dict.fromkeys(re.split(r", | or ", e["ctx"]["expected"])))
        message = f"Input should be {', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else message
    return f"{key or section or err.title}: {message} (got {json.dumps(e['input'], default=str)[:80]})"


def check_ds_config(config: dict, source: str) -> None:
    """Raise ConfigError for the first key or value of a DeepSpeed config that DeepSpeed would refuse (or, for
    the top-level values it does not check, fail on later). Needs no process group."""
    try:
        _DeepSpeedTopLevel.model_validate(config)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_problem(err)}") from None
    micro, acc = config.get("train_micro_batch_size_per_gpu", 1), config.get("gradient_accumulation_steps", 1)
    given = config.get("train_batch_size")
    if given is not None and given % (micro * acc):  # the layout's DP is checked when the engine is built
        raise ConfigError(f"{source}: train_batch_size: {given} is not a multiple of train_micro_batch_size_per_gpu "
                          f"{micro} × gradient_accumulation_steps {acc} (it is micro × accumulation × DP)")
    sections = _ds_sections()
    known = set(sections) | set(_DeepSpeedTopLevel.model_fields) | _ds_constants()
    for key in config:  # DeepSpeed ignores unknown top-level keys: a near miss of a known one is a typo
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if key not in known and close:
            raise ConfigError(f"{source}: {key}: unknown key (did you mean {close[0]}?)")
    for key, model in sections.items():
        if key in config:
            try:
                model(**config[key]) if isinstance(config[key], dict) else model.model_validate(config[key])
            except ValidationError as err:
                raise ConfigError(f"{source}: {_problem(err, key, model)}") from None
            except (TypeError, ValueError, AssertionError) as err:
                raise ConfigError(f"{source}: {key}: {' '.join(str(err).split())}") from None
    from deepspeed.runtime.config import DeepSpeedConfig

    # The rest (cross-field rules) through DeepSpeed's whole config, with the batch it will be given: ours
    # counts distinct samples (train.batch_sizes checks train_batch_size against the layout's DP).
    probe = {k: v for k, v in config.items() if k != "train_batch_size"}
    probe.setdefault("train_micro_batch_size_per_gpu", 1)
    try:
        DeepSpeedConfig(probe)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_problem(err)}") from None
    except Exception as err:  # noqa: BLE001 - DeepSpeed refuses configs with asserts and assorted exceptions
        raise ConfigError(f"{source}: {' '.join(str(err).split()) or type(err).__name__}") from None


def _ds_constants() -> set[str]:
    """Top-level key names DeepSpeed defines as constants (for spotting a misspelt one)."""
    from deepspeed.runtime import constants

    return {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str) and v.isidentifier()}


def parse_layout(text: str) -> dict[str, int]:
    """``"dp=2,pp=2"`` → ``{"dp": 2, "pp": 2}`` (a CLI override of the layout section; an argparse ``type=``)."""
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in ("dp", "pp", "wp", "sp") or not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
            raise ArgumentValueError(f"bad layout item {part!r}: expected dp=N, pp=N, wp=N or sp=N with N ≥ 1")
        out[key] = int(value)
    return out
