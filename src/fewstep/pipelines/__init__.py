"""Small complete pipelines the project trains itself (pipelines/mini_sd.py)."""
