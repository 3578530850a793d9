"""Mixed precision: the training step's compute dtype (`config.dtype`).

With `config.dtype = "bfloat16"` the training step casts the parameters (kept in float32 by the
optimizer) and the preprocessed images to bfloat16 for the model's forward and backward passes,
and casts every floating model output back to float32 before the likelihood, the KL sums and the
loss: matmuls and convolutions run in bfloat16, reductions and the optimizer in float32. The
gradient flows through the casts, so it arrives in float32. Mutable model state (EMA codebooks)
keeps its float32 dtype. Evaluation (ELBO, IW-NLL, AIS, the tools) always runs in float32.

bfloat16 pays where matrix units run it natively (TPUs, recent GPUs); on CPU it is usually slower,
and XLA:CPU accumulates the bias gradients (sums of bfloat16 cotangents over batch x pixels) in
bfloat16: measured on a 16 x 28 x 28 batch, the output layer's bias gradient lost over 90% of its
value while every kernel gradient stayed within 10% (tests/test_precision.py). The train loop
warns when bfloat16 runs on CPU. Not measured on a GPU or TPU here.
"""

import jax
import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")


def compute_dtype(config) -> jnp.dtype:
  """The training step's compute dtype (`config.dtype`, float32 when a config predates it)."""
  return jnp.dtype(config.get("dtype", "float32"))


def cast_floating(tree, dtype: jnp.dtype):
  """`tree` with every floating-point array cast to `dtype` (integers and keys unchanged)."""

  def one(x):
    floating = hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
    return x.astype(dtype) if floating else x

  return jax.tree.map(one, tree)


def in_dtype(apply, dtype: jnp.dtype | None):
  """`apply(variables, x, ...)` run in `dtype`, its floating outputs (and state) back in float32.

  The identity for float32 (or None). Model state is float32 in every family, so casting the
  updated state back to float32 restores its dtype.
  """
  if dtype is None or jnp.dtype(dtype) == jnp.float32:
    return apply

  def low(variables, x, *args, **kwargs):
    result = apply(*cast_floating((variables, x), dtype), *args, **kwargs)
    return cast_floating(result, jnp.float32)

  return low
