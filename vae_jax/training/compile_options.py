"""XLA compiler options for the jitted training and evaluation steps.

On CPU, jaxlib 0.10 hands every single matrix multiply to YNNPACK. For the dense and conv layers of
these models XLA's own (Eigen) kernels are faster: with YNNPACK kept for reductions only, the
`mnist_mlp` train step is ~9% faster and the `beta4` conv step ~10% (same-process A/B,
`python -m benchmarks.step_compile_options`). Other backends, and jaxlib versions that lack the
option, compile with XLA's defaults.
"""

import functools

import jax

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def step_options() -> dict[str, str] | None:
  """`compiler_options` for `jax.jit` of a step on the default backend (None: XLA's defaults)."""
  if jax.default_backend() != "cpu":
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(1.0).compile()
  except jax.errors.JaxRuntimeError:
    return None
  return dict(_CPU_OPTIONS)
