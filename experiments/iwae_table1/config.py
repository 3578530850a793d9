"""IWAE Table 1 (Burda et al. 2015): the paper's MNIST protocol, one config for all 12 cells.

  python -m experiments.iwae_table1.run --cell=vae1_k1 --workdir=runs/iwae/vae1_k1

The protocol, from the paper (sections 5 and appendix C) and its official code:
- data: MNIST, 60,000 training images, dynamically binarized (a fresh Bernoulli draw each time an
  image is seen), the 10,000 test images binarized once with the evaluation key;
- one stochastic layer: 784-200-200-50 (tanh), Gaussian q, Bernoulli p(x|z), N(0, I) prior;
  two stochastic layers: 784-200-200-100 then 100-100-50 (tanh), the same MLPs generatively,
  bottom-up inference (`vae_jax.models.stacked`);
- objective: the VAE rows train the ELBO averaged over k samples, the IWAE rows the k-sample
  bound, k in {1, 5, 50};
- batch 20, Adam (b1 0.9, b2 0.999, eps 1e-4); stage i = 0..7 runs 3^i epochs at learning rate
  0.001 * 10^(-i/7): 3,280 epochs, 9.84 M steps;
- test NLL by the importance-weighted estimate with k = 5,000.

Where this differs: the VAE rows use the analytic KL of the one-layer Gaussian posterior with the
k-sample reconstruction term (same expectation and gradient in expectation as the paper's k-sample
Monte Carlo ELBO, lower variance; the two-layer model's KL is Monte Carlo as in the paper);
initialisation is Flax's LeCun normal (the paper's code used its own heuristic); the
standard deviations are parameterised through log-variances (the paper: exp of a linear output,
the same function class).

Variants: `:short` keeps everything but the length: stages 0-2 only (1 + 3 + 9 = 13 epochs,
39,000 steps; the learning rate reaches 0.001 * 10^(-2/7)).
"""

import ml_collections

from configs import default
from vae_jax.sweep import spec

STAGES = 8
SHORT_STAGES = 3
# Test NLL (nats), k = 5,000, from the paper's Table 1: (objective, layers, k) -> value.
PAPER = {
  ("elbo", 1, 1): 86.76,
  ("elbo", 1, 5): 86.47,
  ("elbo", 1, 50): 86.35,
  ("iwae", 1, 1): 86.76,
  ("iwae", 1, 5): 85.54,
  ("iwae", 1, 50): 84.78,
  ("elbo", 2, 1): 85.33,
  ("elbo", 2, 5): 85.01,
  ("elbo", 2, 50): 84.78,
  ("iwae", 2, 1): 85.33,
  ("iwae", 2, 5): 83.89,
  ("iwae", 2, 50): 82.90,
}
STEPS_PER_EPOCH = 3_000  # 60,000 images in batches of 20.


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The one-layer VAE cell (k = 1); `cell_overrides` turns it into any other cell."""
  config = default.get_config()
  config.data.binarize = "dynamic"
  config.data.batch_size = 20
  config.data.eval_batch_size = 1_000
  config.model.hidden_sizes = (200, 200)
  config.model.latent_dim = 50
  config.model.activation = "tanh"
  config.optimizer.eps = 1e-4
  config.optimizer.schedule = "staged"
  stages = SHORT_STAGES if variant == "short" else STAGES
  if variant not in ("", "short"):
    raise ValueError(f"Unknown iwae_table1 variant {variant!r}; use '' or 'short'.")
  config.optimizer.stage_epochs = tuple(3**i for i in range(stages))
  config.optimizer.stage_decay = 10 ** (-1 / 7)
  config.num_epochs = sum(config.optimizer.stage_epochs)
  config.steps_per_execution = 1_000
  config.log_every_steps = STEPS_PER_EPOCH
  config.log_grad_norm = False  # ~20% of a batch-20 step on CPU, over 9.84 M steps.
  config.eval_every_steps = 100 * STEPS_PER_EPOCH
  config.checkpoint_every_steps = 10 * STEPS_PER_EPOCH
  config.keep_checkpoints = 2
  return config


def cell_overrides(cell: str) -> dict:
  """'vae1_k1', 'iwae2_k50', ... -> the overrides of that Table 1 cell.

  Raises:
    ValueError: not a cell name.
  """
  name, _, k = cell.partition("_k")
  objective, layers = name[:-1], name[-1:]
  if objective not in ("vae", "iwae") or layers not in ("1", "2") or k not in ("1", "5", "50"):
    raise ValueError(f"Unknown cell {cell!r}; use (vae|iwae)(1|2)_k(1|5|50), e.g. iwae2_k5.")
  overrides = {
    "objective.estimator": "elbo" if objective == "vae" else "iwae",
    "objective.num_samples": int(k),
  }
  if layers == "2":
    overrides["model.name"] = "stacked"
  return overrides


CELLS = [f"{o}{layers}_k{k}" for layers in (1, 2) for o in ("vae", "iwae") for k in (1, 5, 50)]


def get_sweep() -> list[spec.Overrides]:
  """The 12 cells of Table 1 (`cell_overrides` of each of `CELLS`)."""
  return [cell_overrides(cell) for cell in CELLS]
