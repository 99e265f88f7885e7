"""train.bf16: what it does to the DeepSpeed config, and a bf16 step on the same batch as fp32."""

from __future__ import annotations

import pytest

from aeris_ds import train
from aeris_ds.errors import ConfigError


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_device_unless_the_deepspeed_config_says(native, monkeypatch):
    monkeypatch.setattr(train, "native_bf16", lambda: native)
    plain = {"optimizer": {"type": "AdamW"}}
    train.apply_precision("auto", plain, "x.json")
    assert plain["bf16"] == {"enabled": native}
    for said in ({"bf16": {"enabled": False}}, {"bf16": {"enabled": True}}, {"fp16": {"enabled": True}}):
        ds = {k: dict(v) for k, v in said.items()}
        train.apply_precision("auto", ds, "x.json")
        assert ds == said


def test_true_false_and_unset():
    ds = {"bf16": {"enabled": True, "immediate_grad_update": True}}
    train.apply_precision(False, ds, "x.json")
    assert ds["bf16"] == {"enabled": False, "immediate_grad_update": True}
    train.apply_precision(True, ds, "x.json")
    assert ds["bf16"]["enabled"] is True
    untouched = {"optimizer": {"type": "AdamW"}}
    train.apply_precision(None, untouched, "x.json")
    assert untouched == {"optimizer": {"type": "AdamW"}}


def test_bf16_with_fp16_is_a_config_error():
    with pytest.raises(ConfigError, match="x.json: fp16 is enabled"):
        train.apply_precision(True, {"fp16": {"enabled": True}}, "x.json")


def test_bf16_training_follows_fp32_and_saves_fp32_weights(tiny_store, tmp_path):
    """The same 3 steps in fp32 and with train.bf16 true: losses within bf16's rounding, fp32 weights saved."""
    import json

    import numpy as np
    import torch
    from ranks import run_ranks
    from test_swipe_layouts import _train_layouts, _weights

    runs = [("fp32", {}, 1, 1), ("bf16", {}, 1, 1, {"bf16": True})]
    (res,) = run_ranks(1, _train_layouts, str(tiny_store), str(tmp_path), runs, tmp=tmp_path / "ranks")
    assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "fp32" / "summary.json").read_text())["precision"] == "fp32"
    fp32, bf16 = np.array(res["fp32"]), np.array(res["bf16"])
    # The zero-initialised output gate keeps the first losses at the target's own (the same in both precisions);
    # the gradients go through every block.
    assert not np.array_equal(fp32[:, 1], bf16[:, 1]), "bf16 must change the arithmetic"
    np.testing.assert_allclose(bf16, fp32, rtol=2e-2)
    a, b = _weights(tmp_path, "bf16"), _weights(tmp_path, "fp32")
    assert all(t.dtype == torch.float32 for t in a.values())
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=5e-3, msg=f"parameter {key}")
