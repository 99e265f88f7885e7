"""Regional compile's switches (no compilation happens here: torch.compile is lazy until the first call)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from aeris_ds.config import load_config
from aeris_ds.model.compiled import compile_blocks
from aeris_ds.model.swin_dit import SwinBlock, single_process_model


def _blocks() -> list[SwinBlock]:
    model, _ = single_process_model(load_config("tiny"))
    return [m for m in model.modules() if isinstance(m, SwinBlock)]


def test_blocks_stay_eager_without_a_cpp_compiler(monkeypatch, capsys):
    blocks = _blocks()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not compile_blocks(blocks[0])
    assert "no C++ compiler" in capsys.readouterr().err
    assert blocks[0]._compiled_call_impl is None


def test_compiled_kernels_are_cached_in_the_environment(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    blocks = _blocks()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what an import leaves behind
    assert compile_blocks(blocks[0])
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(Path(sys.prefix) / "torchinductor_cache")
    assert blocks[0]._compiled_call_impl is not None
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # the user's choice stays
    assert compile_blocks(blocks[1])
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
