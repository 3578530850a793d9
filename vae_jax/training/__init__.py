"""Training: state, jitted data-parallel steps, the loop, vectorized sweep members, checkpoints.

`train.train_and_evaluate(config, workdir)` is a whole run; `vectorized.train_members` trains sweep
members as one program. Both drive `loop.run_loop`, which owns the periodic actions.
"""
