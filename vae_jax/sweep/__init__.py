"""Sweeps: definitions (`spec`), planning and launching (`launch`), executors, reports.

`python -m vae_jax.sweep run|report` is the command line (`__main__`).
"""
