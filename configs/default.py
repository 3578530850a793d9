"""Default configuration: the seeds' MNIST VAE (784-400-20, Bernoulli, Adam 1e-3, batch 128).

Every other config imports this one and overrides only what differs.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Compute dtype of the training step: float32, or bfloat16 (float32 params, loss and optimizer;
  # pays on GPU/TPU, see vae_jax/training/precision.py).
  config.dtype = "float32"

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist"  # dsprites_procedural, dsprites, or a TFDS image dataset.
  config.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default.
  config.data.manual_dir = config_dict.placeholder(str)  # Folder with the raw files (offline).
  config.data.batch_size = 128  # Global batch, split over all devices.
  config.data.eval_batch_size = 1000
  config.data.binarize = "none"  # none | dynamic (fresh Bernoulli draws) | threshold
  config.data.binarize_threshold = 0.5
  config.data.num_eval_examples = 10_000  # Test split size of ground-truth datasets.
  config.data.exclude_labels = ()  # Labels removed from the TRAINING split (anomaly tools).
  # TFDS images: a centred square crop of this side (0: none), then a resize to this side (0:
  # none), done by tf.data before the images are held in memory (CelebA: 148 then 64).
  config.data.center_crop = 0
  config.data.resize = 0
  # Keep the training data on the device and assemble each batch there (when it fits and the
  # dataset supports it); same batches as the host pipeline.
  config.data.on_device = True

  config.model = ml_collections.ConfigDict()
  # A family (vae_jax.models.MODELS); its own fields go in config.model.<name>, with their defaults
  # from models.select_model(config, name).
  config.model.name = "vae"
  config.model.arch = "mlp"  # mlp | conv | resnet
  config.model.latent_dim = 20
  config.model.hidden_sizes = (400,)  # MLP bodies (the decoder mirrors them).
  config.model.conv_features = (32, 64)  # Conv and resnet bodies: a stride-2 stage each.
  config.model.conv_kernel_size = 3
  config.model.dense_sizes = (256,)  # Dense layers between conv stack and latent.
  config.model.res_blocks = 2  # resnet: pre-activation residual blocks per stage.
  config.model.activation = "relu"  # relu | tanh: the MLP bodies' nonlinearity.
  # bernoulli | gaussian | gaussian_learned | logistic_mixture (discretized, 8-bit data)
  config.model.likelihood = "bernoulli"
  config.model.gaussian_sigma = 1.0  # Observation std for likelihood='gaussian'.
  config.model.num_mixtures = 10  # Logistic components per pixel for 'logistic_mixture'.
  config.model.init_scheme = (
    "flax"  # flax (LeCun normal) | pytorch (U(+-1/sqrt(fan_in)), as nn.Linear)
  )

  config.objective = ml_collections.ConfigDict()
  config.objective.estimator = "elbo"  # elbo | iwae (k-sample bound, Burda et al. 2015)
  config.objective.num_samples = 1  # iwae: importance samples k per example.
  config.objective.kl_penalty = "beta"  # beta: beta_t * KL | capacity: gamma * |KL - C_t|
  config.objective.beta = 1.0
  config.objective.kl_schedule = "constant"  # constant | linear | cyclical (multiplies beta)
  config.objective.kl_warmup_steps = 10_000  # linear: steps for beta_t to reach beta.
  config.objective.kl_cycle_steps = 10_000  # cyclical: steps per cycle (Fu et al. 2019).
  config.objective.kl_cycle_ratio = 0.5  # cyclical: share of each cycle spent increasing.
  config.objective.free_bits = 0.0  # Per-dimension KL floor in nats; 0 disables.
  config.objective.capacity_max = 25.0  # capacity: C_max in nats (Burgess et al. 2018).
  config.objective.capacity_steps = 100_000  # capacity: steps for C_t to reach C_max.
  config.objective.capacity_gamma = 1000.0  # capacity: gamma.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # adam | adamw
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4  # adamw only.
  config.optimizer.schedule = "constant"  # constant | cosine
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping.
  config.optimizer.b1 = 0.9  # Adam's moment decays and epsilon (optax's defaults).
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  # > 0: evaluation, image summaries and the tools use a moving average of the parameters with this
  # decay (Polyak averaging, e.g. 0.999), kept beside the optimizer's moments; 0 disables.
  config.optimizer.ema_decay = 0.0
  # staged: stage i runs stage_epochs[i] epochs at learning_rate * stage_decay**i.
  config.optimizer.stage_epochs = (1,)
  config.optimizer.stage_decay = 1.0

  config.num_epochs = 10
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  # Train steps per dispatch (Keras' steps_per_execution): K > 1 runs K steps in one compiled loop
  # (lax.scan), saving per-step dispatch work on small models; dispatches cut short at a logging,
  # evaluation or checkpoint step run step by step, so choose intervals that K divides. Same
  # numbers as K = 1. On XLA:CPU the loop also pays for conv models with the 'phase' convs (beta4:
  # ~118 -> ~92 ms per step with K = 4 on 2 cores, `benchmarks.conv_step`); XLA's own convs run
  # ~25x slower inside it.
  config.steps_per_execution = 1
  config.log_every_steps = 100
  # The global gradient norm as a train metric: on XLA:CPU its reductions cost ~20% of a small
  # MLP's step (0.4 ms of ~2 ms at batch 20), so long small-model protocols may turn it off.
  config.log_grad_norm = True
  config.eval_every_steps = -1  # -1: once per epoch.
  config.checkpoint_every_steps = -1  # -1: once per epoch.
  config.keep_checkpoints = 3
  config.num_image_examples = 8  # Inputs shown next to their reconstructions.
  config.num_prior_samples = 64
  config.num_traversal_inputs = 3  # Test inputs whose latent traversals are logged.
  return config
