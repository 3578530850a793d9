"""beta-VAE (beta = 4) on procedural dSprites with the conv architecture of Higgins et al. 2017.

beta = 4 is the beta-VAE paper's dSprites setting (Higgins et al. 2017). Architecture as in Higgins
et al. / Burgess et al. 2018: four 4x4 stride-2 convs with 32 channels, two dense layers of 256,
a 10-d latent, the mirrored transposed-conv decoder, and a Bernoulli likelihood. Optimisation
follows disentanglement_lib (Locatello et al. 2019, "Challenging common assumptions..."): Adam,
learning rate 1e-4, batch 64, 300,000 steps.

`--config=configs/beta4.py:quick` trains a short run (learning rate 5e-4, 3,000 steps, ~6 minutes on
2 CPU cores) whose reconstructions already show the sprites.
"""

import ml_collections

from configs import default


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = "dsprites_procedural"
  config.data.batch_size = 64
  config.data.eval_batch_size = 500
  config.data.num_eval_examples = 5_000
  config.model.arch = "conv"
  config.model.conv_features = (32, 32, 32, 32)
  config.model.conv_kernel_size = 4
  config.model.dense_sizes = (256, 256)
  config.model.latent_dim = 10
  config.objective.beta = 4.0
  config.optimizer.learning_rate = 1e-4
  config.num_train_steps = 300_000
  config.log_every_steps = 500
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 10_000
  config.num_image_examples = 10
  # 4 steps per compiled loop: ~20% less time per step on 2 CPU cores than one step per dispatch
  # (benchmarks.conv_step). It divides every interval here.
  config.steps_per_execution = 4
  if variant == "quick":
    config.optimizer.learning_rate = 5e-4
    config.num_train_steps = 3_000
    config.log_every_steps = 100
    config.eval_every_steps = 1_000
    config.checkpoint_every_steps = 1_000
  elif variant:
    raise ValueError(f"Unknown beta4 variant {variant!r}; use '' or 'quick'.")
  return config
