"""FLOP accounting, the performance model's terms, the planner and the sweep report."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from aeris_ds.config import load_config
from aeris_ds.perf import flops


def _single_process_model(cfg):
    """The model exactly as train.setup builds it on one rank, without DeepSpeed."""
    from aeris_ds.model.swin_dit import single_process_model

    return single_process_model(cfg)[0]


@pytest.mark.parametrize("name,overrides", [
    ("tiny", {}),
    ("small", {"model": {"depth": 2}}),  # a different dim, window count and SwiGLU width
])
def test_flops_match_flop_counter(name, overrides):
    cfg = load_config(name, overrides)
    model = _single_process_model(cfg)
    batch = 2
    x = torch.randn(batch, cfg.grid.lat * cfg.grid.lon, cfg.in_channels)
    t = torch.rand(batch)
    # The math backend decomposes SDPA into bmm's, which the counter knows (CPU flash SDPA counts 0).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(x, t)
        fwd = counter.get_total_flops()
        out.square().sum().backward()
    total = counter.get_total_flops()
    analytic = flops.forward_flops(cfg)
    assert fwd / batch == pytest.approx(analytic.total, rel=0.02)
    assert total / batch == pytest.approx(flops.step_flops(cfg), rel=0.02)
    # Attention is a real share of the tiny model: dropping it must break the match.
    assert abs(total / batch - (flops.step_flops(cfg) - 3 * analytic.attention)) > 0.02 * total / batch


def test_flops_recompute_adds_one_block_forward():
    cfg = load_config("aeris-40b")
    f = flops.forward_flops(cfg)
    assert flops.step_flops(cfg, recompute=True) - flops.step_flops(cfg) == pytest.approx(f.blocks)
    # Per token per block, the 40B model is dominated by 2·12·D² (qkv, proj, SwiGLU at H = 8/3·D).
    per_token_block = f.blocks / cfg.model.depth / (720 * 1440)
    d = cfg.model.dim
    assert per_token_block == pytest.approx(2 * (4 * d * d + 3 * d * cfg.model.hidden) + 4 * 900 * d, rel=1e-3)


def test_flops_parameter_count_matches_model():
    cfg = load_config("tiny")
    model = _single_process_model(cfg)
    assert flops.parameter_counts(cfg)["total"] == sum(p.numel() for p in model.parameters())


def test_perf_activation_estimate_vs_saved_tensors():
    """The per-token-per-block activation estimate against what autograd really saves for one block."""
    cfg = load_config("small", {"model": {"depth": 1}})
    model = _single_process_model(cfg)
    block = model.layers[1]
    n, d = cfg.grid.lat * cfg.grid.lon, cfg.model.dim
    x = torch.randn(1, n, d, requires_grad=True)
    c = torch.randn(1, d)
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block((x, c))
    measured = sum(saved.values()) / n
    estimate = flops.activation_bytes_per_token_block(d, cfg.model.hidden, dtype_bytes=4)
    assert estimate == pytest.approx(measured, rel=0.25)


def test_perf_peak_table_and_cpu_rate():
    assert flops.peak_flops("h100", torch.bfloat16) == 989e12
    assert flops.peak_flops("max1550_tile", "fp32") == 26.2e12
    with pytest.raises(ValueError, match="unknown device kind 'tpu'"):
        flops.peak_flops("tpu")
    rate = flops.cpu_gemm_rate("fp32", size=256, seconds=0.2)
    assert 1e8 < rate < 1e13


def test_perf_memory_terms_by_zero_stage():
    cfg = load_config("aeris-40b")
    params = flops.parameter_counts(cfg)
    # 60 blocks over PP=20; the estimate charges every stage the larger of the embed and the head.
    stage_params = 3 * params["block"] + max(params["embed"], params["head"])
    replica = 36 * 12
    m0 = flops.memory_per_rank(cfg, zero_stage=0)
    m1 = flops.memory_per_rank(cfg, zero_stage=1)
    assert m0.weights == m1.weights == 2 * stage_params
    assert m0.optimizer == 12 * stage_params
    assert m1.optimizer == pytest.approx(12 * stage_params / replica)
    # Checkpointed: 3 blocks × 20 micro-batches in flight × D bf16 per token + one block's activations.
    tokens = 720 * 1440 / replica
    per_block = flops.activation_bytes_per_token_block(6144, cfg.model.hidden)
    got = flops.memory_per_rank(cfg, accumulation=40).activations
    assert got == pytest.approx(tokens * (20 * 3 * 6144 * 2 + per_block))


# --- performance model -------------------------------------------------------------------------------------

def _toy_machine(**kw):
    from aeris_ds.perf.model import Link, Machine

    link = Link(1e9, 0.0)
    base = dict(name="toy", device="toy", devices_per_node=8, intra=link, inter=Link(1e8, 0.0),
                peak={"bf16": 1e12, "fp32": 1e12}, memory=1e12, efficiency=1.0)
    return Machine(**{**base, **kw})


def test_perf_bubble_fraction():
    from aeris_ds.perf.model import bubble_fraction

    assert bubble_fraction(1, 7) == 0
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert bubble_fraction(20, 40) == pytest.approx(19 / 59)


@pytest.mark.parametrize("lat,lon,window,wp,assignment", [
    (16, 32, (8, 8), 2, "blocks"), (32, 64, (8, 8), 4, "blocks"), (32, 64, (8, 8), 8, "blocks"),
    (48, 96, (8, 8), 6, "blocks"), (32, 64, (8, 8), 4, "round_robin"),
])
def test_perf_moved_fraction_closed_form(lat, lon, window, wp, assignment):
    from aeris_ds.parallel.layout import WindowGrid
    from aeris_ds.perf.model import moved_fraction

    cfg = load_config("tiny", {"grid": {"lat": lat, "lon": lon}, "model": {"window": list(window)},
                               "layout": {"wp": wp, "window_assignment": assignment}})
    exact = WindowGrid(lat, lon, window, wp, 1, assignment).moved_fraction()
    assert moved_fraction(cfg) == pytest.approx(exact)


def test_perf_attention_bytes_hand_computed():
    """tiny, WP=2 × SP=2: 16×32 grid, 8×8 windows in 2×2-window blocks, so f = 1 − 1·(1 − 1/4) = 1/4."""
    from aeris_ds.perf.model import Run, attention_bytes, predict

    cfg = load_config("tiny", {"layout": {"wp": 2, "sp": 2}})
    per_pass = 512 / 4 * 4 * 32 * 4  # home tokens × (q, k, v, out) × dim × fp32 bytes
    sp_expected = 2 * per_pass * (1 * 0.5 + 1 * 0.75 * 0.5)  # fwd+bwd; plain block, shifted block
    wp_expected = 2 * per_pass * 1 * 0.25
    got = attention_bytes(cfg, 4, passes=2)
    assert got["sp"] == pytest.approx(sp_expected) and got["wp"] == pytest.approx(wp_expected)
    halo = attention_bytes(load_config("tiny", {"layout": {"wp": 2, "sp": 2, "shift_exchange": "halo"}}), 4, 2)
    assert halo["sp"] == pytest.approx(2 * per_pass * 2 * 0.5) and halo["wp"] == pytest.approx(wp_expected)
    # predict() charges them per micro-batch sample and accumulation step.
    p = predict(cfg, _toy_machine(), Run(micro_batch=3, accumulation=2, bf16=False))
    assert p.bytes_per_rank["sp"] == pytest.approx(6 * sp_expected)
    assert p.bytes_per_rank["wp"] == pytest.approx(6 * wp_expected)


def test_perf_step_time_hand_computed():
    """PP=2 × DP=2 on one toy node: every term by hand."""
    from aeris_ds.perf.model import Run, parameter_counts, predict

    cfg = load_config("tiny", {"layout": {"pp": 2, "dp": 2}})
    m = _toy_machine()
    run = Run(micro_batch=2, accumulation=4, zero_stage=1, bf16=True)
    p = predict(cfg, m, run)
    compute = flops.step_flops(cfg) * 2 / 2 / 1e12  # 2 samples, half the model per stage
    pp_send = 2 * (2 * 512) * 32 * 2 / 1e9  # activation + its gradient, 2 samples, bf16
    t_micro = compute + pp_send
    stage_params = 1 * parameter_counts(cfg)["block"] + max(parameter_counts(cfg)["embed"],
                                                            parameter_counts(cfg)["head"])
    grad = 2 * (2 - 1) / 2 * stage_params * 2 / 1e9  # ring over the 2 DP replicas, bf16
    assert p.times["compute"] == pytest.approx(4 * compute)
    assert p.times["pp"] == pytest.approx(4 * pp_send)
    assert p.times["bubble"] == pytest.approx(1 * t_micro)
    assert p.times["grad"] == pytest.approx(grad)
    assert p.step_time == pytest.approx(5 * t_micro + grad)
    assert p.samples_per_step == 2 * 4 * 2
    assert p.times["sp"] == p.times["wp"] == 0


def test_perf_links_follow_rank_order():
    """SP inside a node uses the intra link; once WP·SP leaves the node the shift traffic goes inter-node."""
    from aeris_ds.perf.model import Run, predict

    m = _toy_machine(devices_per_node=4)
    inside = predict(load_config("small", {"layout": {"wp": 2, "sp": 2}}), m, Run(bf16=False))
    across = predict(load_config("small", {"layout": {"wp": 4, "sp": 2}}), m, Run(bf16=False))
    assert inside.times["wp"] == pytest.approx(inside.bytes_per_rank["wp"] / 1e9)
    assert across.times["wp"] == pytest.approx(across.bytes_per_rank["wp"] / 1e8)
    assert across.times["sp"] == pytest.approx(across.bytes_per_rank["sp"] / 1e9)


def test_perf_fit_efficiency_recovers_target():
    from aeris_ds.perf.model import AURORA, Run, fit_efficiency, predict, with_layout

    cfg = with_layout(load_config("aeris-40b"), dp=14)
    run = Run(1, 40, 1, True)
    fitted = fit_efficiency(cfg, AURORA, run, 10.21e18)
    assert predict(cfg, fitted, run, 10080).flops_per_s == pytest.approx(10.21e18, rel=1e-6)
    with pytest.raises(ValueError, match="out of reach"):
        fit_efficiency(cfg, AURORA, run, 1e21)


def test_perf_calibrate_recovers_known_machine():
    """Step times made by a known efficiency and overhead are fitted back from the 1-rank runs alone."""
    from aeris_ds.perf.model import Run, calibrate, predict

    truth = _toy_machine(efficiency=0.3, overhead=0.05, peak={"bf16": 1e10, "fp32": 1e10})
    records, fit = [], []
    for layout, micro in [({}, 1), ({}, 4), ({"wp": 2}, 2), ({"pp": 2}, 2)]:
        cfg = load_config("tiny", {"layout": layout})
        run = Run(micro, 1, 1, False)
        records.append({"config": cfg.model_dump(mode="json"), "micro_batch": micro, "accumulation": 1,
                        "zero_stage": 1, "precision": "fp32",
                        "step_time_s": predict(cfg, truth, run, 1).step_time})
        fit.append(not layout)
    fitted, errors = calibrate(records, _toy_machine(peak=truth.peak), fit)
    assert fitted.efficiency == pytest.approx(0.3, rel=1e-6) and fitted.overhead == pytest.approx(0.05, rel=1e-6)
    assert max(abs(e) for e in errors) < 1e-6


# --- planner -----------------------------------------------------------------------------------------------

def test_plan_ranks_layouts_that_fit():
    from dataclasses import replace

    from aeris_ds.perf.model import AURORA
    from aeris_ds.perf.plan import candidate_layouts, plan

    cfg = load_config("aeris-1.3b")
    small_memory = replace(AURORA, memory=20 * flops.GiB)
    options = plan(cfg, 4, small_memory)
    assert options, "some layout of the 1.3B model fits 4 nodes at 20 GiB"
    rates = [o.prediction.samples_per_s for o in options]
    assert rates == sorted(rates, reverse=True)
    assert all(o.prediction.memory.total <= 20 * flops.GiB for o in options)
    # Memory filtered something out: more candidates than options at the full 64 GB.
    assert len(options) < len(plan(cfg, 4, AURORA))
    for o in options:
        lay = o.cfg.layout
        assert lay.dp * lay.pp * lay.wp * lay.sp == 48 and cfg.model.heads % lay.sp == 0 and lay.sp <= 12
        ds = o.ds_config()
        assert ds["zero_optimization"]["stage"] == 1 or lay.pp == 1
        assert ds["train_batch_size"] == o.run.micro_batch * o.run.accumulation * lay.dp * lay.wp * lay.sp
    assert {"dp": 1, "pp": 1, "wp": 48, "sp": 1} in candidate_layouts(cfg, 48, 12)


def test_plan_refuses_model_that_does_not_fit():
    from aeris_ds.perf.plan import plan

    with pytest.raises(ValueError, match=r"aeris-40b does not fit on 2 aurora nodes: .* needs [\d.]+ GiB .* "
                                         r"over the 60 GiB of a max1550_tile"):
        plan(load_config("aeris-40b"), 2, "aurora")
    with pytest.raises(ValueError, match="unknown machine 'summit'"):
        plan(load_config("aeris-40b"), 2, "summit")


def test_plan_cli(capsys):
    from aeris_ds.perf.plan import main

    assert main(["--model", "1.3b", "--nodes", "4", "--machine", "aurora", "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("aeris-1.3b on 4 aurora nodes (48 devices)")
    assert len([line for line in out if "ZeRO-" in line]) == 3
    from aeris_ds.errors import run_command

    assert run_command(main, ["--model", "40b", "--nodes", "1", "--machine", "lumi"]) == 2
    assert "does not fit on 1 lumi nodes" in capsys.readouterr().err


# --- sweep report ------------------------------------------------------------------------------------------

def _sweep_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "launchers" / "sweep.py"
    spec = importlib.util.spec_from_file_location("sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_perf_sweep_report(tmp_path):
    import csv

    sweep = _sweep_module()
    rows = []
    for rid, layout, ranks, gb, sps in [("one", {}, 1, 2, 4.0), ("wp2", {"wp": 2}, 2, 2, 6.0),
                                        ("dp2", {"dp": 2}, 2, 4, 7.0), ("pp2", {"pp": 2}, 2, 2, 3.0)]:
        cfg = load_config("tiny", {"layout": layout})
        rows.append({"id": rid, "config": cfg.model_dump(mode="json"), "layout": str(cfg.layout.as_layout()),
                     "ranks": ranks, "devices": ranks, "micro_batch": 2, "accumulation": 1, "global_batch": gb,
                     "zero_stage": 1, "precision": "fp32", "step_time_s": gb / sps, "samples_per_s": sps,
                     "tflops_per_device": 0.01, "mfu": 0.1 * ranks, "peak_rss_mib": 100, "bytes_sp": 0,
                     "bytes_wp": 10, "machine": "test"})
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = sweep.report(results, tmp_path / "out")
    table = {r["id"]: r for r in csv.DictReader(paths[0].open())}
    assert table["wp2"]["scaling"] == "strong" and float(table["wp2"]["scaling_efficiency"]) == pytest.approx(0.75)
    assert table["dp2"]["scaling"] == "weak" and float(table["dp2"]["scaling_efficiency"]) == pytest.approx(0.875)
    assert table["pp2"]["scaling_efficiency"] == pytest.approx(str(3.0 / 4.0 / 2))
    assert table["one"]["scaling"] == ""
    for png in paths[1:]:
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_perf_sweep_points_expand_axes():
    sweep = _sweep_module()
    pts = sweep.points({"config": "small", "axes": [{"layout": ["dp=1"], "micro_batch": [1, 4]},
                                                    {"layout": ["wp=2", "pp=2,sp=2"], "precision": ["fp32", "bf16"]}]})
    assert len(pts) == 2 + 4
    assert pts[2]["layout"] == "dp=1,pp=1,wp=2,sp=1"  # every axis spelled out: the preset's own layout cannot leak
    assert sweep.point_id(pts[5]) == "small-pp2_sp2-pbf16"
    with pytest.raises(ValueError, match="unknown sweep axes"):
        sweep.points({"config": "small", "axes": {"heads": [2]}})
