"""Polyak averaging: an exponential moving average of the parameters, kept in the optimizer state.

`with_params_ema(tx, decay)` wraps an optimizer so that its state also holds
`ema = d_t * ema + (1 - d_t) * params` of the parameters after each update, starting from the
initial parameters, with `d_t = min(decay, (1 + t) / (10 + t))` at update t (counted from 0), the
warm-up of TensorFlow's `ExponentialMovingAverage(num_updates=t)`: early on the average follows the
parameters instead of remembering their initial values. Living in the optimizer state, the average
is checkpointed, resumed, replicated over devices and vmapped over sweep members like the moments.
Evaluation, image summaries and the tools use it in place of the parameters (`averaged_params`),
as PixelCNN++ (Salimans et al. 2017) and vdvae do for their test likelihoods and samples.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ParamsEmaState(NamedTuple):
  """The wrapped optimizer's state, the update count and the parameters' moving average."""

  inner: Any
  count: jax.Array
  ema: Any


def decay_at(decay: float, count: jax.Array) -> jax.Array:
  """The decay of update `count`: `min(decay, (1 + count) / (10 + count))`."""
  count = jnp.asarray(count, jnp.float32)
  return jnp.minimum(jnp.asarray(decay, jnp.float32), (1.0 + count) / (10.0 + count))


def with_params_ema(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
  """`tx` whose state also keeps the moving average of the parameters it updates.

  Args:
    tx: the optimizer.
    decay: the moving average's decay in (0, 1), e.g. 0.999 (an average over ~1,000 steps).

  Returns:
    A transformation with `tx`'s updates; its `update` needs `params`.
  """

  def init(params):
    return ParamsEmaState(tx.init(params), jnp.zeros((), jnp.int32), params)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("with_params_ema needs the parameters in update().")
    updates, inner = tx.update(updates, state.inner, params)
    d = decay_at(decay, state.count)
    new_params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new_params)
    return updates, ParamsEmaState(inner, state.count + 1, ema)

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state: Any, params: Any) -> Any:
  """The moving average in `opt_state` when the optimizer keeps one, else `params`."""
  return opt_state.ema if isinstance(opt_state, ParamsEmaState) else params
