"""Maximum mean discrepancy (Gretton et al. 2012) between a batch of codes and the prior N(0, I).

The kernels are those of the WAE paper (Tolstikhin et al. 2018), with the bandwidth set by the
prior: C = 2 d sigma_z^2 for d-dimensional codes and p(z) = N(0, sigma_z^2 I), which is
E||x - y||^2 for x, y ~ p(z). `imq` is the inverse multiquadratic C / (C + ||x - y||^2), `rbf` the
Gaussian exp(-||x - y||^2 / C). Each kernel is summed over `scales` (C multiplied by each); the
WAE authors' code sums the IMQ kernel over (0.1, 0.2, 0.5, 1, 2, 5, 10).

The estimate is the unbiased U-statistic MMD_u^2 (Gretton et al. 2012, eq. 3): the within-sample
means leave out the pairs (i, i), so its expectation is the population MMD^2 and two samples of one
distribution give 0 on average (it can be negative). Weights (a padding mask) leave rows out.
"""

import jax
import jax.numpy as jnp

KERNELS = ("imq", "rbf")


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """||x_i - y_j||^2 [n, m] of the rows of x [n, d] and y [m, d]."""
  sq = jnp.sum(x**2, axis=1)[:, None] + jnp.sum(y**2, axis=1)[None, :] - 2.0 * x @ y.T
  return jnp.maximum(sq, 0.0)


def kernel_matrix(
  x: jax.Array,
  y: jax.Array,
  kernel: str,
  scales: tuple[float, ...] = (1.0,),
  prior_var: float = 1.0,
) -> jax.Array:
  """The kernel [n, m] between the rows of x and y, summed over the bandwidth scales.

  Args:
    x: [n, d] codes.
    y: [m, d] codes.
    kernel: 'imq' or 'rbf'.
    scales: multipliers of the base bandwidth C = 2 d prior_var.
    prior_var: sigma_z^2 of the prior N(0, sigma_z^2 I).
  """
  if kernel not in KERNELS:
    raise ValueError(f"Unknown kernel {kernel!r}; choose one of {KERNELS}.")
  sq = squared_distances(x, y)
  base = 2.0 * x.shape[1] * prior_var
  total = jnp.zeros_like(sq)
  for scale in scales:
    c = base * scale
    total = total + (c / (c + sq) if kernel == "imq" else jnp.exp(-sq / c))
  return total


def _weighted_mean(k: jax.Array, pair_weights: jax.Array) -> jax.Array:
  total = jnp.sum(pair_weights)
  return jnp.where(total > 0, jnp.sum(k * pair_weights) / jnp.maximum(total, 1e-30), 0.0)


def mmd_u(
  x: jax.Array,
  y: jax.Array,
  kernel: str,
  scales: tuple[float, ...] = (1.0,),
  x_weights: jax.Array | None = None,
  y_weights: jax.Array | None = None,
  prior_var: float = 1.0,
) -> jax.Array:
  """The unbiased MMD^2 estimate between the samples x [n, d] and y [m, d].

  With 0/1 weights it is the U-statistic of the rows whose weight is 1: the means over (i, j) pairs
  of one sample leave out i = j, the cross term averages every pair. Needs two rows of each sample.
  """
  wx = jnp.ones(x.shape[0], x.dtype) if x_weights is None else x_weights.astype(x.dtype)
  wy = jnp.ones(y.shape[0], y.dtype) if y_weights is None else y_weights.astype(y.dtype)

  def within(v, w):
    pairs = w[:, None] * w[None, :] * (1.0 - jnp.eye(v.shape[0], dtype=v.dtype))
    return _weighted_mean(kernel_matrix(v, v, kernel, scales, prior_var), pairs)

  cross = _weighted_mean(kernel_matrix(x, y, kernel, scales, prior_var), wx[:, None] * wy[None, :])
  return within(x, wx) + within(y, wy) - 2.0 * cross


def prior_samples(rng: jax.Array, num: int, dim: int) -> jax.Array:
  """`num` draws [num, dim] from N(0, I); row i uses fold_in(rng, i), whatever `num` is."""
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(num))
  return jax.vmap(lambda k: jax.random.normal(k, (dim,)))(keys)


def prior_mmd(
  z: jax.Array,
  rng: jax.Array,
  kernel: str,
  scales: tuple[float, ...] = (1.0,),
  mask: jax.Array | None = None,
) -> jax.Array:
  """MMD_u^2 between the codes z [B, d] and as many draws from N(0, I), row i from fold_in(rng, i).

  A row of z with mask 0 (padding) is left out together with prior draw i, so a padded batch gives
  the value of its real rows.
  """
  prior = prior_samples(rng, z.shape[0], z.shape[1]).astype(z.dtype)
  return mmd_u(z, prior, kernel, scales, mask, mask)
