"""Regional torch.compile: each Swin block through torch.compile, in training and in forecasts.

The blocks of one kind share one compiled graph, so compiling stays short, and a block's all-to-alls run
eagerly between its graphs. Compiled kernels are cached in the environment (``<sys.prefix>/torchinductor_cache``,
like the JAX cache and the DeepSpeed extensions) unless the user chose a cache (TORCHINDUCTOR_CACHE_DIR), so a
second run compiles less. On the CPU the kernels need a C++ compiler; without one the blocks stay eager.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from deepspeed.accelerator import get_accelerator
from torch import nn
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from aeris_ds.model.swin_dit import SwinBlock


def compile_blocks(model: nn.Module, say: bool = True) -> bool:
    """torch.compile every Swin block of ``model`` in place; False (said once when ``say``) when it cannot."""
    compilers = (os.environ.get("CXX", "g++"), "clang++")
    if get_accelerator().device_name() == "cpu" and not any(map(shutil.which, compilers)):
        if say:
            print("compile: no C++ compiler (g++, clang++ or $CXX) for torch.compile; the blocks run eagerly",
                  file=sys.stderr, flush=True)
        return False
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) == default_cache_dir():
        # torch's default is a temporary folder, which an import may already have written into the environment
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(sys.prefix) / "torchinductor_cache")
    for block in model.modules():
        if isinstance(block, SwinBlock):
            block.compile()
    return True
