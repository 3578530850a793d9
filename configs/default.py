"""Default configuration: the seeds' MNIST VAE (784-400-20, Bernoulli, Adam 1e-3, batch 128).

Every other config imports this one and overrides only what differs.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

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

  config.model = ml_collections.ConfigDict()
  config.model.name = "vae"  # vae | cvae | ae | vqvae | hvae | iaf | btcvae | factorvae
  config.model.arch = "mlp"  # mlp | conv
  config.model.latent_dim = 20
  config.model.hidden_sizes = (400,)  # MLP bodies (the decoder mirrors them).
  config.model.conv_features = (32, 64)  # Conv bodies, each stride 2.
  config.model.conv_kernel_size = 3
  config.model.dense_sizes = (256,)  # Dense layers between conv stack and latent.
  config.model.likelihood = "bernoulli"  # bernoulli | gaussian | gaussian_learned
  config.model.gaussian_sigma = 1.0  # Observation std for likelihood='gaussian'.
  config.model.init_scheme = (
    "flax"  # flax (LeCun normal) | pytorch (U(+-1/sqrt(fan_in)), as nn.Linear)
  )
  # hvae: latent_dim is the top layer (the code encode returns); these are the layers below it.
  config.model.hvae_lower_dims = (64,)  # Sizes of z_0 .. z_{L-2}, bottom (nearest x) first.
  config.model.hvae_hidden = 256  # Dense+ReLU width of each bottom-up step and prior network.
  config.model.iaf_steps = 2  # iaf: number of IAF steps K.
  config.model.iaf_hidden_sizes = (320, 320)  # iaf: hidden layers of each step's MADE.
  config.model.iaf_context_dim = 32  # iaf: encoder context h fed to every MADE; 0 for none.
  # btcvae (Chen et al. 2018): loss -recon + alpha MI + beta TC + gamma dimension-wise KL.
  config.model.btcvae_alpha = 1.0
  config.model.btcvae_beta = 6.0
  config.model.btcvae_gamma = 1.0
  config.model.btcvae_dataset_size = 60_000  # N of the aggregate posterior: training examples.
  config.model.btcvae_estimator = "mws"  # mws (the paper's) | mss (stratified)
  config.model.factorvae_gamma = 35.0  # factorvae (Kim & Mnih 2018): weight of the TC penalty.
  config.model.discriminator_hidden_sizes = (1000,) * 6  # factorvae: TC discriminator MLP.
  # vqvae (van den Oord et al. 2017): conv arch = a code grid (H/4 x W/4 for two conv layers;
  # dense_sizes unused), mlp arch = latent_dim code vectors.
  config.model.vq_num_codes = 512  # Codebook size K.
  config.model.vq_code_dim = 64  # Code vector size D.
  config.model.vq_commitment_cost = 0.25  # beta of the commitment loss.
  config.model.vq_codebook_update = "loss"  # loss (codebook loss) | ema (moving averages).
  config.model.vq_ema_decay = 0.99
  config.model.vq_ema_epsilon = 1e-5  # Laplace smoothing of the EMA cluster sizes (shares).
  config.model.vq_dead_code_restart = False  # ema: move rarely used codes to encoder outputs.
  config.model.vq_dead_code_threshold = 0.05  # Dead: EMA share below this times 1/K.

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
  # > 0: params['discriminator'] (factorvae) get their own Adam(lr, b1, b2), constant rate.
  config.optimizer.discriminator_learning_rate = 0.0
  config.optimizer.discriminator_b1 = 0.5
  config.optimizer.discriminator_b2 = 0.9

  config.num_epochs = 10
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  # Train steps per dispatch (Keras' steps_per_execution): K > 1 runs up to K steps in one XLA
  # while loop, saving per-step dispatch and input work on small models. Same numbers up to float
  # rounding. On XLA:CPU convolutions inside a loop are ~30x slower: keep 1 for conv models there.
  config.steps_per_execution = 1
  config.log_every_steps = 100
  config.eval_every_steps = -1  # -1: once per epoch.
  config.checkpoint_every_steps = -1  # -1: once per epoch.
  config.keep_checkpoints = 3
  config.num_image_examples = 8  # Inputs shown next to their reconstructions.
  config.num_prior_samples = 64
  config.num_traversal_inputs = 3  # Test inputs whose latent traversals are logged.
  return config
