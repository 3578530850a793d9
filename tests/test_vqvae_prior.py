import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.conftest import synthetic_dataset, tiny_config
from vae_jax import configuration, runs
from vae_jax.errors import ConfigError
from vae_jax.losses import elbo
from vae_jax.models import build_model, pixelcnn
from vae_jax.models.vqvae import VQVAE
from vae_jax.tools import generation, open_run
from vae_jax.tools import reconstruction as recon_tools
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train
from vae_jax.training.checkpoints import Checkpointer

K, D = 16, 4
PRIOR = {
  "model.vqvae_prior.features": 8,
  "model.vqvae_prior.num_layers": 2,
  "model.vqvae_prior.head_features": 16,
}


@pytest.fixture(scope="module")
def data():
  return synthetic_dataset(n_train=128, n_test=40)


@pytest.fixture(scope="module")
def mesh():
  return meshes.make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def vqvae_dir(tmp_path_factory, data) -> str:
  """A run of a tiny conv VQ-VAE (7x7 grid of K=16 codes) whose checkpoint is its initial state.

  The prior's tests need a restorable VQ-VAE run, not a trained one (`test_vqvae` trains them);
  saving the initial state skips compiling and running the VQ-VAE's training and evaluation.
  """
  workdir = str(tmp_path_factory.mktemp("vqprior") / "vqvae")
  config = tiny_config(
    **{
      "model.name": "vqvae",
      "model.arch": "conv",
      "model.vqvae.num_codes": K,
      "model.vqvae.code_dim": D,
      "model.vqvae.codebook_update": "ema",
    }
  )
  model = build_model(config.model, data.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 1)
  runs.save_config(config, workdir)
  ckpt = Checkpointer(workdir, 1)
  ckpt.save(
    0, jax.jit(lambda rng: state_lib.init_state(model, tx, rng, data.spec))(jax.random.key(0))
  )
  ckpt.close()
  return workdir


def _prior_config(vqvae_dir: str, **overrides):
  return tiny_config(
    **{"model.name": "vqvae_prior", "model.vqvae_prior.vqvae_workdir": vqvae_dir, **PRIOR},
    **overrides,
  )


def prior_of(vqvae_dir, data):
  """The prior model on the tiny VQ-VAE and freshly initialised variables."""
  config = _prior_config(vqvae_dir)
  model = build_model(config.model, data.spec)
  x = jnp.zeros((2, *data.image_shape))
  model_vars = jax.jit(model.init)(jax.random.key(0), x, jax.random.split(jax.random.key(1), 2))
  return config, model, model_vars


@pytest.fixture(scope="module")
def prior(vqvae_dir, data):
  return prior_of(vqvae_dir, data)


def _influence(stack: pixelcnn.GatedStack, grid: tuple[int, int], c: int) -> np.ndarray:
  """[L, L] whether output position i (raster order) has a nonzero gradient from input j."""
  e = jax.random.normal(jax.random.key(0), (1, *grid, c))
  params = stack.init(jax.random.key(1), e)
  jac = jax.jit(jax.jacrev(lambda e: stack.apply(params, e)[0].sum(-1)))(e)  # [H, W, 1, H, W, C]
  n = grid[0] * grid[1]
  return np.asarray(jnp.abs(jac).reshape(n, n, c).sum(-1) > 0)


def _stack(num_layers: int) -> pixelcnn.GatedStack:
  # A wide head: with a few hidden ReLUs all could be off at a position, zeroing its gradients.
  return pixelcnn.GatedStack(3, features=4, num_layers=num_layers, head_features=64)


def test_pixelcnn_is_causal_and_has_no_blind_spot():
  earlier = np.tril(np.ones((49, 49), bool), k=-1)  # [i, j]: j is before i in raster order.
  # k=3 on a 7x7 grid: the far end of a row is 6 columns away, which 6 layers reach.
  np.testing.assert_array_equal(_influence(_stack(6), (7, 7), 4), earlier)
  one, two = (_influence(_stack(n), (7, 7), 4) for n in (1, 2))
  assert not one[~earlier].any() and not two[~earlier].any()
  # (2, 2) and (1, 4): the original PixelCNN's 3x3 masked kernels never connect them, the
  # vertical stack does from layer 2 on.
  assert not one[16, 11] and two[16, 11]
  np.testing.assert_array_equal(np.nonzero(one[16])[0], [1, 2, 3, 8, 9, 10, 14, 15])


def test_example_dropout_keeps_the_expectation_and_ignores_the_batch():
  x = jnp.ones((3, 200, 50))
  keys = jax.random.split(jax.random.key(0), 3)
  out = np.asarray(pixelcnn.example_dropout(x, keys, 0.2))
  assert set(np.unique(out)) == {0.0, 1.25}
  np.testing.assert_allclose((out == 0).mean(), 0.2, atol=0.01)
  np.testing.assert_allclose(out.mean(), 1.0, atol=0.02)
  alone = pixelcnn.example_dropout(x[1:2], keys[1:2], 0.2)
  np.testing.assert_array_equal(alone[0], out[1])
  assert not np.array_equal(out[0], out[1])


def test_dropout_is_causal_per_example_and_off_without_keys():
  grid, c = (5, 5), 4
  stack = pixelcnn.GatedStack(3, features=c, num_layers=4, head_features=64, dropout=0.5)
  plain = pixelcnn.GatedStack(3, features=c, num_layers=4, head_features=64)
  e = jax.random.normal(jax.random.key(0), (3, *grid, c))
  params = stack.init(jax.random.key(1), e)
  keys = jax.random.split(jax.random.key(2), 3)
  apply, apply_plain = jax.jit(stack.apply), jax.jit(plain.apply)
  np.testing.assert_array_equal(apply(params, e), apply_plain(params, e))
  dropped = apply(params, e, keys)
  assert np.abs(dropped - apply(params, e)).max() > 1e-3
  np.testing.assert_allclose(apply(params, e[2:], keys[2:]), dropped[2:], atol=1e-6)
  jac = jax.jit(jax.jacrev(lambda e: stack.apply(params, e, keys[:1])[0].sum(-1)))(e[:1])
  n = grid[0] * grid[1]
  influence = np.asarray(jnp.abs(jac).reshape(n, n, c).sum(-1) > 0)
  assert not influence[~np.tril(np.ones((n, n), bool), k=-1)].any()


def test_model_drops_out_only_in_training(prior, vqvae_dir, data):
  config = _prior_config(vqvae_dir, **{"model.vqvae_prior.dropout": 0.3})
  model = build_model(config.model, data.spec)
  x = jnp.asarray(data.test_images[:4], jnp.float32) / 255.0
  keys = jax.random.split(jax.random.key(1), 4)
  _, plain, model_vars = prior  # Dropout adds no parameters: the plain prior's variables fit.
  apply = jax.jit(lambda v, step=None: model.apply(v, x, keys, step=step).kl_per_dim)
  evaluated = apply(model_vars)
  plain_kl = jax.jit(lambda v: plain.apply(v, x, keys).kl_per_dim)(model_vars)
  np.testing.assert_allclose(evaluated, plain_kl, rtol=1e-6)
  trained = apply(model_vars, jnp.asarray(3))
  assert np.abs(trained - evaluated).max() > 1e-3
  again = apply(model_vars, jnp.asarray(3))
  np.testing.assert_array_equal(trained, again)


def test_code_nll_is_a_numpy_cross_entropy():
  logits = jax.random.normal(jax.random.key(0), (3, 5, K)) * 3
  codes = jax.random.randint(jax.random.key(1), (3, 5), 0, K)
  lg, c = np.asarray(logits, np.float64), np.asarray(codes)
  log_z = np.log(np.exp(lg).sum(-1))
  expected = log_z - np.take_along_axis(lg, c[..., None], -1)[..., 0]
  np.testing.assert_allclose(pixelcnn.code_nll(logits, codes), expected, rtol=1e-5)


def test_samples_follow_a_constant_conditional():
  logits = jnp.array([1.0, -0.5, 0.3, 2.0])
  fn = jax.jit(
    lambda r: pixelcnn.sample_codes(
      lambda c: jnp.broadcast_to(logits, (*c.shape, 4)), r, 1000, (2, 3), 1.0
    )
  )
  codes = np.asarray(fn(jax.random.key(0)))
  np.testing.assert_array_equal(codes, fn(jax.random.key(0)))
  freq = np.bincount(codes.ravel(), minlength=4) / codes.size
  p = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(p * (1 - p) / codes.size).max())
  # Every position is drawn with its own key: no two positions repeat the same column of draws.
  flat = codes.reshape(1000, -1)
  assert all((flat[:, 0] != flat[:, t]).any() for t in range(1, 6))


def test_each_position_is_drawn_given_the_ones_before():
  # p(c_t | c_<t) puts nearly all mass on c_{t-1} + 1 (mod 4); c_0 is uniform.
  def logits_fn(c):
    flat = c.reshape(c.shape[0], -1)
    prev = jnp.concatenate([jnp.zeros_like(flat[:, :1]), flat[:, :-1]], axis=1)
    out = 30.0 * jax.nn.one_hot((prev + 1) % 4, 4)
    out = out.at[:, 0].set(0.0)
    return out.reshape(*c.shape, 4)

  codes = np.asarray(pixelcnn.sample_codes(logits_fn, jax.random.key(3), 200, (2, 3), 1.0))
  flat = codes.reshape(200, -1)
  np.testing.assert_array_equal(flat, (flat[:, :1] + np.arange(6)) % 4)
  assert len(set(flat[:, 0])) == 4
  # Temperature 0 is the most likely code (logits / tiny overflow to ties at +inf).
  peak = jnp.array([5.0, 10.0, 7.0, -1.0])
  greedy = pixelcnn.sample_codes(
    lambda c: jnp.broadcast_to(peak, (*c.shape, 4)), jax.random.key(0), 2, (2, 3), 0.0
  )
  np.testing.assert_array_equal(greedy, 1)


def test_model_samples_its_conditional(prior):
  _, model, model_vars = prior
  # Zero weights make the logits the output bias at every position, whatever came before.
  params = jax.tree.map(jnp.zeros_like, model_vars["params"])
  bias = jnp.linspace(-2.0, 2.0, K)
  params["pixelcnn"]["stack"]["head_logits"]["bias"] = bias
  fn = jax.jit(lambda r: model.apply({"params": params}, r, 400, method=model.sample_codes))
  codes = np.asarray(fn(jax.random.key(5)))
  assert codes.shape == (400, 49)
  np.testing.assert_array_equal(codes, fn(jax.random.key(5)))
  assert not np.array_equal(codes, fn(jax.random.key(6)))
  freq = np.bincount(codes.ravel(), minlength=K) / codes.size
  p = np.asarray(jax.nn.softmax(bias))
  np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(p * (1 - p) / codes.size).max())


def test_forward_pass_scores_the_vqvae_codes(prior, vqvae_dir, data):
  config, model, model_vars = prior
  vq = runs.open_run(vqvae_dir, spec=data.spec, mesh=meshes.make_mesh(jax.devices()[:1]))
  x = jnp.asarray(data.test_images[:6], jnp.float32) / 255.0

  @jax.jit
  def both(x):
    codes = vq.model.apply(vq.model_vars, x, method=VQVAE.code_indices)
    z_e = vq.model.apply(vq.model_vars, x, method=vq.model.encode).mean
    want = codes, z_e, vq.model.apply(vq.model_vars, z_e, method=vq.model.decode)
    out = model.apply(model_vars, x, jax.random.split(jax.random.key(0), 6))
    logits = model.apply(model_vars, codes, method=model.logits)
    return want, (out, logits, model.apply(model_vars, x, method=model.encode).mean)

  (codes, z_e, recon), (out, logits, prior_z_e) = both(x)
  nll = np.asarray(pixelcnn.code_nll(logits, codes))
  np.testing.assert_allclose(out.kl_per_dim, nll, rtol=1e-6)
  np.testing.assert_allclose(out.extra_terms["code_nll_nats"], nll.mean(-1), rtol=1e-6)
  np.testing.assert_allclose(
    out.extra_terms["code_nll_bits"], nll.mean(-1) / math.log(2), rtol=1e-6
  )
  np.testing.assert_allclose(prior_z_e, z_e, atol=1e-6)
  np.testing.assert_allclose(out.out, recon, atol=1e-5)


def test_loss_gradient_is_the_code_nll_gradient(prior, data):
  config, model, model_vars = prior
  batch = {"image": jnp.asarray(data.train_images[:8])}
  keys = jax.random.split(jax.random.key(0), 8)
  x = batch["image"].astype(jnp.float32) / 255.0

  def loss(params):
    terms, _ = steps.forward_terms(model, params, batch, keys, config)
    return elbo.loss_from_terms(terms, config.objective, 0)[0]

  def nll(params):
    codes = model.apply({"params": params}, x, keys).kl_per_dim
    return codes.sum(-1).mean()

  got, want = jax.jit(lambda p: (jax.grad(loss)(p), jax.grad(nll)(p)))(model_vars["params"])
  helpers.assert_trees_close(got, want, atol=1e-6)
  assert set(model_vars) == {"params"} and set(model_vars["params"]) == {"pixelcnn"}


def test_validation_names_the_vqvae_run(vqvae_dir, tmp_path):
  with pytest.raises(ConfigError, match=r"^model.vqvae_prior.vqvae_workdir is not set; pass "):
    configuration.validate(tiny_config(**{"model.name": "vqvae_prior"}), 1)
  missing = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match="vqvae_workdir='.*nowhere' is not a directory"):
    configuration.validate(_prior_config(missing), 1)
  with pytest.raises(ConfigError, match="is not a training run: .*config.json does not exist"):
    configuration.validate(_prior_config(str(tmp_path)), 1)
  vae = str(tmp_path / "vae")
  runs.save_config(tiny_config(), vae)
  with pytest.raises(ConfigError, match="holds a model.name='vae' run, not a VQ-VAE"):
    configuration.validate(_prior_config(vae), 1)
  untrained = str(tmp_path / "untrained")
  runs.save_config(tiny_config(**{"model.name": "vqvae"}), untrained)
  with pytest.raises(ConfigError, match="vqvae_checkpoint: .* has no checkpoints"):
    configuration.validate(_prior_config(untrained), 1)
  with pytest.raises(ConfigError, match="data.binarize='dynamic' differs from the VQ-VAE run's"):
    configuration.validate(_prior_config(vqvae_dir, **{"data.binarize": "dynamic"}), 1)
  with pytest.raises(ConfigError, match="objective.estimator='elbo', kl_penalty='beta', beta=1"):
    configuration.validate(_prior_config(vqvae_dir, **{"objective.beta": 2.0}), 1)
  with pytest.raises(ConfigError, match="kernel_size=4 must be odd"):
    configuration.validate(_prior_config(vqvae_dir, **{"model.vqvae_prior.kernel_size": 4}), 1)
  with pytest.raises(ConfigError, match=r"dropout=1.0 must be in \[0, 1\)"):
    configuration.validate(_prior_config(vqvae_dir, **{"model.vqvae_prior.dropout": 1.0}), 1)
  configuration.validate(_prior_config(vqvae_dir), 1)


def test_shipped_config_validates_with_a_vqvae_run(vqvae_dir):
  from configs import mnist_vqvae_prior

  config = mnist_vqvae_prior.get_config()
  config.model.vqvae_prior.vqvae_workdir = vqvae_dir
  configuration.validate(config, num_devices=1)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vqvae_prior", "vqvae_cprior"])
def test_end_to_end_train_a_prior_then_sample(vqvae_dir, data, mesh, tmp_path, family):
  workdir = str(tmp_path / "prior")
  sizes = {k.replace("vqvae_prior", family): v for k, v in PRIOR.items()}
  config = tiny_config(
    **{"model.name": family, f"model.{family}.vqvae_workdir": vqvae_dir, **sizes},
    **{"optimizer.learning_rate": 1e-2},
  )
  results = train.train_and_evaluate(config, workdir, mesh=mesh, dataset=data)
  bits, nats = results["eval_code_nll_bits"], results["eval_code_nll_nats"]
  assert bits < math.log2(K)  # Below the uniform prior's log2 K bits per code.
  np.testing.assert_allclose(bits, nats / math.log(2), rtol=1e-5)
  np.testing.assert_allclose(results["eval_kl"], 49 * nats, rtol=1e-5)
  np.testing.assert_allclose(results["eval_loss"], -results["eval_elbo"], rtol=1e-5)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "8"))
  assert "eval/code_nll_bits" in helpers.event_tags(workdir)

  run = open_run(workdir, dataset=data)
  sampled = generation.run_sample(run, num=6)
  assert sampled["images"].shape == (6, 28, 28, 1) and np.isfinite(sampled["images"]).all()
  assert all(os.path.exists(f) for f in sampled["files"])
  rec = recon_tools.run_reconstruct(run, num=4)
  assert all(os.path.exists(f) for f in rec["files"])
  inter = generation.run_interpolate(run, steps=3, mode="linear")
  assert inter["images"]["linear"].shape == (3, 28, 28, 1)
