"""Default configuration: the seeds' MNIST VAE (784-400-20, Bernoulli, Adam 1e-3, batch 128).

Every other config imports this one and overrides only what differs.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist"  # Any TFDS image dataset (mnist, fashion_mnist, ...).
  config.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default.
  config.data.manual_dir = config_dict.placeholder(str)  # Folder with the raw files (offline).
  config.data.batch_size = 128  # Global batch, split over all devices.
  config.data.eval_batch_size = 1000
  config.data.binarize = "none"  # none | dynamic (fresh Bernoulli draws) | threshold
  config.data.binarize_threshold = 0.5

  config.model = ml_collections.ConfigDict()
  config.model.name = "vae"  # vae | cvae | ae
  config.model.arch = "mlp"  # mlp | conv
  config.model.latent_dim = 20
  config.model.hidden_sizes = (400,)  # MLP bodies (the decoder mirrors them).
  config.model.conv_features = (32, 64)  # Conv bodies, each stride 2.
  config.model.conv_kernel_size = 3
  config.model.dense_sizes = (256,)  # Dense layers between conv stack and latent.
  config.model.likelihood = "bernoulli"  # bernoulli | gaussian | gaussian_learned
  config.model.gaussian_sigma = 1.0  # Observation std for likelihood='gaussian'.

  config.objective = ml_collections.ConfigDict()
  config.objective.beta = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # adam | adamw
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4  # adamw only.
  config.optimizer.schedule = "constant"  # constant | cosine
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping.

  config.num_epochs = 10
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.log_every_steps = 100
  config.eval_every_steps = -1  # -1: once per epoch.
  config.checkpoint_every_steps = -1  # -1: once per epoch.
  config.keep_checkpoints = 3
  config.num_image_examples = 8  # Inputs shown next to their reconstructions.
  config.num_prior_samples = 64
  return config
