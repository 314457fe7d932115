"""fewstep: distil diffusion and flow-matching teachers into 1-4 step generators."""
__version__ = "0.1.0"
