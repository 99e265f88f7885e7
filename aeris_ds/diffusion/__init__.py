"""TrigFlow diffusion: training targets and samplers."""
