"""PRNG keys of a run, all derived from `config.seed` with `fold_in`.

`run_keys(seed)` splits the seed's key into init/train/eval/sample keys. Example i of step s gets
fold_in(fold_in(train_key, s), i); an evaluation example gets fold_in(eval_key, index in the split).
Every number therefore depends on (seed, step, example index) only, never on how many devices or
processes share the batch.
"""

import jax
import jax.numpy as jnp

_BATCH_INDEX = 2**31 - 1  # An example index no batch reaches: keys for batch-level randomness.


def run_keys(seed: int) -> dict[str, jax.Array]:
  """A run's keys, all from `config.seed`: 'init', 'train', 'eval' and 'sample'."""
  keys = jax.random.split(jax.random.key(seed), 4)
  return dict(zip(("init", "train", "eval", "sample"), keys, strict=True))


def index_keys(rng: jax.Array, indices: jax.Array) -> jax.Array:
  """One key per example: fold_in(rng, index)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


def example_keys(rng: jax.Array, step, indices: jax.Array) -> jax.Array:
  """One key per example: fold_in(fold_in(rng, step), global example index)."""
  return index_keys(jax.random.fold_in(rng, step), indices)


def batch_key(rng: jax.Array, step) -> jax.Array:
  """One key per step for randomness over the whole batch (e.g. a permutation across examples)."""
  return jax.random.fold_in(jax.random.fold_in(rng, step), _BATCH_INDEX)


def step_keys(rng: jax.Array, step, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """Per-example keys [batch] and the batch-level key of a training step."""
  return example_keys(rng, step, jnp.arange(batch_size)), batch_key(rng, step)


def split_example_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each example key -> (key for binarization, key for the posterior noise)."""
  data_keys, eps_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  return data_keys, eps_keys


def sample_keys(eps_keys: jax.Array, sample_ids: jax.Array) -> jax.Array:
  """Keys [k, batch] for posterior samples `sample_ids` of each example: fold_in(key, sample)."""
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
  return jax.vmap(lambda s: fold(eps_keys, s))(sample_ids)
