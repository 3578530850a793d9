"""The class-conditional PixelCNN prior (family `vqvae_cprior`); fixtures from test_vqvae_prior."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.test_vqvae_prior import PRIOR, data, vqvae_dir  # noqa: F401 (fixtures)
from vae_jax import configuration
from vae_jax.errors import ConfigError
from vae_jax.models import build_model, pixelcnn
from vae_jax.models.vqvae import VQVAE

K = 16
CPRIOR = {k.replace("vqvae_prior", "vqvae_cprior"): v for k, v in PRIOR.items()}


def _config(workdir, **overrides):
  return tiny_config(
    **{"model.name": "vqvae_cprior", "model.vqvae_cprior.vqvae_workdir": workdir, **CPRIOR},
    **overrides,
  )


@pytest.fixture(scope="module")
def cprior(vqvae_dir, data):  # noqa: F811
  """The conditional prior on the tiny VQ-VAE, its variables with larger label weights."""
  model = build_model(_config(vqvae_dir).model, data.spec)
  x = jnp.zeros((2, *data.image_shape))
  keys, y = jax.random.split(jax.random.key(1), 2), jnp.zeros(2, jnp.int32)
  model_vars = jax.jit(model.init)(jax.random.key(0), x, keys, y)
  # Scaled up so that labels move the logits well above float noise.
  params = jax.tree_util.tree_map_with_path(
    lambda path, p: p * 20 if "cond_" in jax.tree_util.keystr(path) else p, model_vars["params"]
  )
  return model, {"params": params}


def test_labels_condition_every_position_and_codes_stay_causal():
  net = pixelcnn.GatedPixelCNN(5, features=4, num_layers=3, head_features=32, num_classes=3)
  codes = jax.random.randint(jax.random.key(0), (1, 4, 4), 0, 5)
  params = net.init(jax.random.key(1), codes, None, jnp.zeros(1, jnp.int32))
  stack = pixelcnn.GatedStack(5, features=4, num_layers=3, head_features=32)
  cond = jax.nn.one_hot(jnp.array([2]), 3)
  e = params["params"]["embed"]["embedding"][codes]
  stack_vars = {"params": params["params"]["stack"]}
  jac = jax.jit(jax.jacrev(lambda e: stack.apply(stack_vars, e, None, cond)))(e)
  influence = np.asarray(jnp.abs(jac[0]).sum((2, -1)).reshape(16, 16) > 0)
  assert not influence[~np.tril(np.ones((16, 16), bool), k=-1)].any()
  apply = jax.jit(net.apply)
  logits = np.stack([apply(params, codes, None, jnp.array([y]))[0] for y in range(3)])
  assert (np.abs(logits[1:] - logits[0]).max(axis=-1) > 1e-3).all()  # Position 0 included.
  with pytest.raises(ValueError, match="labels y must be given exactly when num_classes > 0"):
    net.apply(params, codes)
  plain = pixelcnn.GatedPixelCNN(5, features=4, num_layers=3, head_features=32)
  with pytest.raises(ValueError, match="labels y must be given exactly when num_classes > 0"):
    plain.init(jax.random.key(1), codes, None, jnp.zeros(1, jnp.int32))


def test_forward_pass_scores_the_codes_given_the_labels(cprior, data):  # noqa: F811
  model, model_vars = cprior
  x = jnp.asarray(data.test_images[:6], jnp.float32) / 255.0
  y = jnp.asarray(data.test_labels[:6])
  keys = jax.random.split(jax.random.key(0), 6)

  @jax.jit
  def run(x, y):
    codes = model.apply(model_vars, x, method=lambda m, x: m.vqvae(VQVAE.code_indices, x))
    logits = model.apply(model_vars, codes, None, y, method=model.logits)
    other = model.apply(model_vars, x, keys, (y + 1) % 10).kl_per_dim
    return model.apply(model_vars, x, keys, y).kl_per_dim, pixelcnn.code_nll(logits, codes), other

  kl, nll, other = run(x, y)
  np.testing.assert_allclose(kl, nll, rtol=1e-6)
  assert np.abs(np.asarray(other) - np.asarray(kl)).max() > 1e-3


def test_marginal_code_nll_averages_the_classes(cprior, data):  # noqa: F811
  model, model_vars = cprior
  x = jnp.asarray(data.test_images[:5], jnp.float32) / 255.0
  keys = jax.random.split(jax.random.key(0), 5)
  apply = jax.jit(lambda v, y: model.apply(v, x, keys, y).kl_per_dim.sum(-1))
  per_class = np.stack([apply(model_vars, jnp.full(5, c, jnp.int32)) for c in range(10)], 0)
  per_class = per_class.astype(np.float64)
  want = -(np.log(np.exp(-per_class).mean(0)))
  marginal = jax.jit(lambda v: model.apply(v, x, method=model.marginal_code_nll))
  np.testing.assert_allclose(marginal(model_vars), want, rtol=1e-5)
  by_class = jax.jit(lambda v: model.apply(v, x, method=model.class_code_nll))(model_vars)
  np.testing.assert_allclose(by_class, per_class, rtol=1e-5)
  # Without label weights every class gives the same p(c | y): the marginal is that NLL.
  flat = jax.tree_util.tree_map_with_path(
    lambda path, p: p * 0 if "cond_" in jax.tree_util.keystr(path) else p, model_vars
  )
  one = apply(flat, jnp.zeros(5, jnp.int32))
  np.testing.assert_allclose(marginal(flat), one, rtol=1e-5)


def test_samples_take_their_labels(cprior):
  model, model_vars = cprior
  # Zero weights but the label weights of the last layer: the logits of every position are a
  # function of the label alone, so the codes drawn for label a follow softmax(that function).
  params = jax.tree.map(jnp.zeros_like, model_vars["params"])
  stack = params["pixelcnn"]["stack"]
  stack["head_logits"]["kernel"] = jnp.eye(16) * 4
  stack["head_hidden"]["kernel"] = jnp.eye(stack["head_hidden"]["kernel"].shape[0], 16)
  last = stack[f"layer_{CPRIOR['model.vqvae_cprior.num_layers'] - 1}"]
  c = last["horizontal_out"]["kernel"].shape[0]
  last["horizontal_out"]["kernel"] = jnp.eye(c)
  last["cond_horizontal"]["kernel"] = jnp.tile(jnp.eye(10, c) * 20, (1, 2))
  y = jnp.repeat(jnp.arange(2), 200)
  fn = jax.jit(lambda r: model.apply({"params": params}, r, 400, 1.0, y, method=model.sample_codes))
  codes = np.asarray(fn(jax.random.key(5)))
  # Label a puts logit 4 * tanh(20) * sigmoid(20) ~ 4 on code a, 0 on the other codes.
  for label in (0, 1):
    freq = (codes[200 * label : 200 * (label + 1)] == label).mean()
    want = math.exp(4) / (math.exp(4) + K - 1)
    np.testing.assert_allclose(freq, want, atol=4 * math.sqrt(want * (1 - want) / (200 * 49)))


def test_validation_and_shipped_config(vqvae_dir):  # noqa: F811
  from configs import mnist_vqvae_cprior

  with pytest.raises(ConfigError, match=r"^model.vqvae_cprior.vqvae_workdir is not set; pass "):
    configuration.validate(tiny_config(**{"model.name": "vqvae_cprior"}), 1)
  with pytest.raises(ConfigError, match=r"model.vqvae_cprior.dropout=1.0 must be in \[0, 1\)"):
    configuration.validate(_config(vqvae_dir, **{"model.vqvae_cprior.dropout": 1.0}), 1)
  config = mnist_vqvae_cprior.get_config()
  assert config.model.name == "vqvae_cprior" and "vqvae_prior" not in config.model
  config.model.vqvae_cprior.vqvae_workdir = vqvae_dir
  configuration.validate(config, num_devices=1)
