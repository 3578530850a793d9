"""What moving in a family's flat code means: the traversals and paths the latent tools decode.

A tool takes a model's code `Posterior.mean` [n, d], changes it and decodes the result; the model's
`code_space()` says how. Host-side numpy throughout.

- `RealCodes` (the default): each coordinate is a real latent. A traversal sets one coordinate to
  a range of values; a path is linear or spherical (`lerp`, `slerp`); the KL that orders traversal
  rows is the Gaussian posterior's, when there is one.
- `CategoricalCodes`: the code is N categorical variables of K classes, flattened variable-major
  ([n, N * K], variable j in columns j*K .. j*K + K - 1), holding each variable's class
  probabilities (the mean of its one-hot). A traversal sets one variable to each of its K classes
  (one-hot) with the others at the input's probabilities; a path is linear in the probabilities
  ('linear': a mixture, on the simplex) or linear in the log-probabilities and renormalised
  ('logit': a geometric mixture); the KL is each variable's KL to the uniform categorical.
"""

import dataclasses

import numpy as np

from vae_jax.losses.categorical import kl_uniform
from vae_jax.losses.distributions import kl_standard_normal


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation from a (t=0) to b (t=1) for each t; linear when a and b are parallel.

  Returns:
    [len(t), d] points. The angle is measured between the directions of a and b; the magnitudes are
    interpolated along with it (as in White 2016, "Sampling Generative Networks").
  """
  a, b, t = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(t, np.float64)[:, None]
  cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * a + t * b
  return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Linear interpolation from a (t=0) to b (t=1): [len(t), d]."""
  t = np.asarray(t, np.float64)[:, None]
  return (1 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)


@dataclasses.dataclass(frozen=True)
class RealCodes:
  """Codes whose coordinates are real latents (Gaussian, flow, hierarchical, point codes)."""

  modes: tuple[str, ...] = ("linear", "slerp")

  def num_latents(self, code_size: int) -> int:
    """How many latents a code of `code_size` coordinates has: one per coordinate."""
    return code_size

  def traversal(self, code: np.ndarray, dims: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Codes [n, len(dims), len(values), d]: row r sets coordinate dims[r] to each of `values`."""
    dims = np.asarray(dims)
    z = np.tile(code[:, None, None, :], (1, len(dims), len(values), 1))
    rows, cols = np.arange(len(dims))[:, None], np.arange(len(values))[None, :]
    z[:, rows, cols, dims[:, None]] = values[None, :]
    return z

  def path(self, a: np.ndarray, b: np.ndarray, t: np.ndarray, mode: str) -> np.ndarray:
    """Points [len(t), d] from code a (t=0) to code b (t=1): 'linear' or 'slerp'."""
    return {"linear": lerp, "slerp": slerp}[mode](a, b, t)

  def latent_kl(self, mean: np.ndarray, logvar: np.ndarray | None) -> np.ndarray | None:
    """KL(q(z_j|x) || N(0, 1)) [n, d] of a Gaussian posterior; None without a log-variance."""
    if logvar is None:
      return None
    return np.asarray(kl_standard_normal(mean, logvar))


@dataclasses.dataclass(frozen=True)
class CategoricalCodes:
  """Codes of `num_variables` categorical variables of `num_classes` classes (see the module)."""

  num_variables: int
  num_classes: int
  modes: tuple[str, ...] = ("linear", "logit")

  def num_latents(self, code_size: int) -> int:
    """How many latents a code has: one per categorical variable."""
    del code_size
    return self.num_variables

  def _blocks(self, code: np.ndarray) -> np.ndarray:
    return np.asarray(code).reshape(*np.shape(code)[:-1], self.num_variables, self.num_classes)

  def traversal(self, code: np.ndarray, dims: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Codes [n, len(dims), K, N * K]: row r sets variable dims[r] to class 0, 1, ..., K - 1.

    `values` (a real latent's sweep) does not apply: a variable's values are its K classes.
    """
    del values
    dims, k = np.asarray(dims), self.num_classes
    blocks = self._blocks(code)
    z = np.tile(blocks[:, None, None], (1, len(dims), k, 1, 1))
    z[:, np.arange(len(dims))[:, None], np.arange(k)[None, :], dims[:, None]] = np.eye(k)
    return z.reshape(*z.shape[:3], -1)

  def path(self, a: np.ndarray, b: np.ndarray, t: np.ndarray, mode: str) -> np.ndarray:
    """Points [len(t), N * K] from probabilities a (t=0) to b (t=1): 'linear' or 'logit'."""
    if mode == "linear":
      return lerp(a, b, t)
    tiny = np.finfo(np.float32).tiny
    log_path = lerp(np.log(np.maximum(a, tiny)), np.log(np.maximum(b, tiny)), t)
    blocks = self._blocks(log_path)
    blocks = np.exp(blocks - blocks.max(axis=-1, keepdims=True))
    return (blocks / blocks.sum(axis=-1, keepdims=True)).reshape(len(t), -1)

  def latent_kl(self, mean: np.ndarray, logvar: np.ndarray | None) -> np.ndarray:
    """KL(q(z_j|x) || Uniform(K)) [n, N] of each variable, from its class probabilities."""
    del logvar
    log_q = np.log(np.maximum(self._blocks(mean), np.finfo(np.float32).tiny))
    return np.asarray(kl_uniform(log_q))
