"""aeris-ds: the AERIS pixel-level Swin diffusion transformer and SWiPe parallelism on DeepSpeed."""

__version__ = "0.1.0"
