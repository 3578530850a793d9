"""On-device preprocessing: uint8 images to floats in [0, 1], optionally binarized.

Dynamic binarization draws a fresh Bernoulli image each time an example is seen, from that
example's own key (derived from the seed, the step and the example's global index), so the draws do
not depend on how many devices share the batch.
"""

import jax
import jax.numpy as jnp

BINARIZE = ("none", "dynamic", "threshold")


def preprocess(
  images: jnp.ndarray, keys: jax.Array, binarize: str = "none", threshold: float = 0.5
) -> jnp.ndarray:
  """Scales uint8 images to [0, 1] floats and binarizes them as configured.

  Args:
    images: uint8 [batch, H, W, C].
    keys: one PRNG key per example, [batch] (used by dynamic binarization only).
    binarize: 'none', 'dynamic' (x ~ Bernoulli(pixel intensity)) or 'threshold' (x > threshold).
    threshold: intensity threshold for 'threshold'.

  Returns:
    float32 images [batch, H, W, C].
  """
  x = images.astype(jnp.float32) / 255.0
  if binarize == "none":
    return x
  if binarize == "threshold":
    return (x > threshold).astype(jnp.float32)
  if binarize == "dynamic":
    draw = jax.vmap(lambda k, xi: jax.random.bernoulli(k, xi).astype(jnp.float32))
    return draw(keys, x)
  raise ValueError(f"Unknown data.binarize {binarize!r}; choose one of {BINARIZE}.")
