import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import helpers
from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.collectives import LOCAL
from vae_jax.errors import ConfigError
from vae_jax.losses import likelihoods
from vae_jax.models import build_model, vqvae
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

K, D = 16, 4


def _config(**overrides):
  return tiny_config(
    **{
      "model.name": "vqvae",
      "model.arch": "conv",
      "model.vqvae.num_codes": K,
      "model.vqvae.code_dim": D,
      **overrides,
    }
  )


def _model_and_vars(dataset, **overrides):
  config = _config(**overrides)
  model = build_model(config.model, dataset.spec)
  x = jnp.zeros((2, *dataset.image_shape))
  model_vars = model.init(jax.random.key(0), x, jax.random.split(jax.random.key(1), 2))
  return config, model, dict(model_vars)


def _images(dataset, n=8):
  return jnp.asarray(dataset.train_images[:n], jnp.float32) / 255.0


def _keys(n):
  return jax.random.split(jax.random.key(2), n)


def _numpy_nearest(z, codebook):
  d2 = ((np.asarray(z)[..., None, :] - np.asarray(codebook)) ** 2).sum(-1)
  return d2.argmin(-1)


def _vectors(z):
  """Channel-major flat codes [b, D * L] -> [b, L, D]."""
  z = np.asarray(z)
  return z.reshape(z.shape[0], D, -1).transpose(0, 2, 1)


@pytest.mark.parametrize("arch,num_latents", [("conv", 49), ("mlp", 4)])
def test_output_shapes(dataset, arch, num_latents):
  _, model, model_vars = _model_and_vars(dataset, **{"model.arch": arch})
  x = _images(dataset, 3)

  @jax.jit
  def run(model_vars, x):
    out = model.apply(model_vars, x, _keys(3))
    z_e = model.apply(model_vars, x, method=model.encode).mean
    decoded = model.apply(model_vars, z_e, method=model.decode)
    samples = model.apply(model_vars, jax.random.key(3), 5, method=model.generate)
    return out, z_e, decoded, samples

  out, z_e, decoded, samples = run(model_vars, x)
  assert out.out.shape == x.shape
  assert out.z.shape == out.stats["z_e"].shape == (3, D * num_latents)
  assert out.stats["code_usage"].shape == (3, K)
  np.testing.assert_allclose(out.stats["code_usage"].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out.kl_per_dim, np.full((3, num_latents), math.log(K)))
  assert {k: v.shape for k, v in out.extra_terms.items()} == {
    "aux_loss": (3,),
    "commitment_loss": (3,),
    "codebook_loss": (3,),
  }
  np.testing.assert_allclose(z_e, out.stats["z_e"], atol=1e-6)
  # decode quantizes what encode returns: the same image as the forward pass.
  np.testing.assert_allclose(decoded, out.out, atol=1e-5)
  assert samples.shape == (5, *dataset.image_shape)


def test_nearest_codes_on_a_hand_made_codebook():
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, -3.0]])
  z = jnp.array([[0.1, -0.1], [0.9, 0.4], [0.2, 1.2], [-1.0, -2.5], [0.5, 0.0], [5.0, 0.0]])
  np.testing.assert_array_equal(vqvae.nearest_codes(z, codebook), [0, 1, 2, 3, 0, 1])


def test_aux_losses_are_the_squared_distances_to_the_nearest_code(dataset):
  _, model, model_vars = _model_and_vars(dataset)
  codebook = np.random.default_rng(0).normal(size=(K, D)).astype(np.float32)
  model_vars["params"] = {**model_vars["params"], "codebook": jnp.asarray(codebook)}
  x = _images(dataset, 4)
  out = model.apply(model_vars, x, _keys(4))
  z_e = _vectors(out.stats["z_e"])
  idx = _numpy_nearest(z_e, codebook)
  sq = ((z_e - codebook[idx]) ** 2).sum(axis=(1, 2))
  terms = out.extra_terms
  np.testing.assert_allclose(terms["commitment_loss"], 0.25 * sq, rtol=1e-5)
  np.testing.assert_allclose(terms["codebook_loss"], sq, rtol=1e-5)
  np.testing.assert_allclose(terms["aux_loss"], 1.25 * sq, rtol=1e-5)
  np.testing.assert_allclose(_vectors(out.z), codebook[idx], atol=1e-5)
  usage = np.stack([np.bincount(i, minlength=K) / i.size for i in idx])
  np.testing.assert_allclose(out.stats["code_usage"], usage, atol=1e-6)


def test_straight_through_gradient_treats_quantization_as_identity(dataset):
  _, model, model_vars = _model_and_vars(dataset)
  x = _images(dataset, 4)

  def recon_loss(params):
    out = model.apply({"params": params}, x, _keys(4))
    return -likelihoods.bernoulli_log_likelihood(x, out.out).mean(), out.z

  def loss_of_codes(z):
    vecs = jnp.swapaxes(z.reshape(4, D, -1), 1, 2).reshape(4, 7, 7, D)
    out = model.apply(model_vars, vecs, method=lambda m, v: m.decoder(v))
    return -likelihoods.bernoulli_log_likelihood(x, out).mean()

  @jax.jit
  def gradients(params):
    grads, z_q = jax.grad(recon_loss, has_aux=True)(params)
    # Reference: d loss / d z at z = z_q, pulled back through the encoder alone.
    z_e, encoder_vjp = jax.vjp(
      lambda p: model.apply({"params": p}, x, method=model.encode).mean, params
    )
    (expected,) = encoder_vjp(jax.grad(loss_of_codes)(z_q))
    return grads["encoder"], expected["encoder"], z_e, z_q

  grads, expected, z_e, z_q = gradients(model_vars["params"])
  assert not np.allclose(z_e, z_q)
  norm = optax.global_norm(grads)
  assert norm > 0
  helpers.assert_trees_close(grads, expected, atol=1e-5 * float(norm))


def test_ema_update_formula_on_known_inputs():
  sizes, sums = vqvae.ema_update(
    jnp.array([0.5, 0.5]),
    jnp.array([[1.0, 0.0], [0.0, 1.0]]),
    usage=jnp.array([1.0, 0.0]),
    assigned_mean=jnp.array([[3.0, 2.0], [0.0, 0.0]]),
    decay=0.9,
  )
  np.testing.assert_allclose(sizes, [0.55, 0.45], rtol=1e-6)
  np.testing.assert_allclose(sums, [[1.2, 0.2], [0.0, 0.9]], rtol=1e-6)
  # Laplace smoothing: n_k = (c_k + eps) / (n + K eps) * n with n = 1.
  eps = 0.1
  codebook = vqvae.ema_codebook(sizes, sums, eps)
  smoothed = (np.array([0.55, 0.45]) + eps) / (1.0 + 2 * eps)
  np.testing.assert_allclose(codebook, np.array([[1.2, 0.2], [0.0, 0.9]]) / smoothed[:, None])


def test_forward_pass_updates_the_ema_codebook_only_when_mutable(dataset):
  _, model, model_vars = _model_and_vars(dataset, **{"model.vqvae.codebook_update": "ema"})
  assert "codebook" not in model_vars["params"]
  ema = model_vars["vq_ema"]
  np.testing.assert_allclose(ema["cluster_size"], np.full(K, 1 / K))
  x = _images(dataset, 4)
  out, new = model.apply(model_vars, x, _keys(4), mutable=["vq_ema"])
  z_e = _vectors(out.stats["z_e"]).reshape(-1, D)
  codebook = vqvae.ema_codebook(ema["cluster_size"], ema["embed_sum"], 1e-5)
  onehot = np.eye(K)[_numpy_nearest(z_e, codebook)]
  np.testing.assert_allclose(
    new["vq_ema"]["cluster_size"], 0.99 * ema["cluster_size"] + 0.01 * onehot.mean(0), rtol=1e-5
  )
  np.testing.assert_allclose(
    new["vq_ema"]["embed_sum"],
    0.99 * ema["embed_sum"] + 0.01 * onehot.T @ z_e / len(z_e),
    rtol=1e-4,
    atol=1e-7,
  )
  assert set(out.extra_terms) == {"aux_loss", "commitment_loss"}
  # The EMA codebook starts at its initial vectors; evaluation (not mutable) uses it as it is.
  np.testing.assert_allclose(codebook, ema["embed_sum"] * K, rtol=1e-3)
  np.testing.assert_allclose(model.apply(model_vars, x, _keys(4)).out, out.out, atol=1e-6)


def test_perplexity_is_k_for_uniform_use_and_one_for_a_single_code():
  np.testing.assert_allclose(vqvae.perplexity(jnp.full(8, 1 / 8)), 8.0, rtol=1e-6)
  np.testing.assert_allclose(vqvae.perplexity(jnp.eye(8)[3]), 1.0)
  np.testing.assert_allclose(vqvae.perplexity(jnp.array([0.5, 0.5, 0.0])), 2.0, rtol=1e-6)


def test_dead_code_restart_moves_an_unused_code_to_an_encoder_output(dataset):
  overrides = {"model.vqvae.codebook_update": "ema", "model.vqvae.dead_code_restart": True}
  _, model, model_vars = _model_and_vars(dataset, **overrides)
  sizes = np.full(K, 1 / K, np.float32)
  sizes[3] = 1e-6  # Below 0.05 / K: dead.
  model_vars["vq_ema"] = {**model_vars["vq_ema"], "cluster_size": jnp.asarray(sizes)}
  x = _images(dataset, 4)
  out = model.apply(model_vars, x, _keys(4))
  (_, metrics), new = model.apply(
    model_vars, out, LOCAL, jax.random.key(5), method=model.batch_loss, mutable=["vq_ema"]
  )
  assert float(metrics["codes_restarted"]) == 1
  before = vqvae.ema_codebook(sizes, model_vars["vq_ema"]["embed_sum"], 1e-5)
  after = vqvae.ema_codebook(new["vq_ema"]["cluster_size"], new["vq_ema"]["embed_sum"], 1e-5)
  z_e = _vectors(out.stats["z_e"]).reshape(-1, D)
  restarted = np.asarray(new["vq_ema"]["embed_sum"][3] / new["vq_ema"]["cluster_size"][3])
  assert np.abs(z_e - restarted).max(axis=1).min() < 1e-6
  assert not np.allclose(after[3], before[3])
  np.testing.assert_allclose(np.delete(after, 3, 0), np.delete(before, 3, 0), rtol=1e-4)
  np.testing.assert_allclose(new["vq_ema"]["cluster_size"][3], 1 / K)


def _run_steps(dataset, config, num_devices, tx, num_steps):
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  model = build_model(config.model, dataset.spec)
  state = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec)
  step = steps.make_train_step(model, tx, config, mesh)
  batch = jax.device_put(dataset.train_stream(32, 0).batch(0), meshes.batch_sharded(mesh))
  history = []
  for _ in range(num_steps):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(dataset):
  _, history = _run_steps(dataset, _config(), 1, optax.adam(3e-3), 25)
  losses = [float(m["loss"]) for m in history]
  assert losses[-1] < 0.8 * losses[0]
  assert 1 <= float(history[-1]["perplexity"]) <= K
  assert 0 < float(history[-1]["codes_used_share"]) <= 1


# SGD (not Adam, which hides gradient-scale bugs) on one batch split over 1 and 4 devices. The EMA
# statistics are linear batch means (pmean-ed by the step); restarts draw from the gathered batch.
@pytest.mark.parametrize(
  "overrides",
  [
    {"model.vqvae.codebook_update": "loss"},
    {
      "model.vqvae.codebook_update": "ema",
      "model.vqvae.dead_code_restart": True,
      "model.vqvae.dead_code_threshold": 0.99,
    },
  ],
)
def test_one_and_four_devices_give_the_same_params_and_codebook(dataset, overrides):
  config = _config(**overrides)
  s1, h1 = _run_steps(dataset, config, 1, optax.sgd(1e-4), 3)
  s4, h4 = _run_steps(dataset, config, 4, optax.sgd(1e-4), 3)
  helpers.assert_trees_close(s1.params, s4.params, atol=1e-5)
  helpers.assert_trees_close(s1.model_state, s4.model_state, atol=1e-6)
  for m1, m4 in zip(h1, h4, strict=True):
    for key in ("loss", "perplexity", "codes_used_share"):
      np.testing.assert_allclose(m1[key], m4[key], rtol=1e-5, err_msg=key)
  if "vq_ema" in s1.model_state:
    assert float(h1[-1]["codes_restarted"]) > 0
    assert float(h1[0]["codes_restarted"]) == 0


def test_restart_needs_the_ema_codebook():
  config = _config(**{"model.vqvae.dead_code_restart": True})
  with pytest.raises(ConfigError, match="model.vqvae.dead_code_restart needs"):
    configuration.validate(config, 1)


def test_resnet_bodies_are_refused_rather_than_replaced_by_mlps():
  configuration.validate(_config(**{"model.arch": "mlp"}), 1)
  with pytest.raises(ConfigError, match="model.arch='resnet': VQ-VAE has 'mlp' and 'conv'"):
    configuration.validate(_config(**{"model.arch": "resnet"}), 1)


@pytest.mark.slow
def test_mnist_vqvae_config_trains_end_to_end(dataset, tmp_path):
  config = importlib.import_module("configs.mnist_vqvae").get_config()
  config.update_from_flattened_dict(
    {
      "model.conv_features": (8, 16),
      "model.vqvae.num_codes": 32,
      "model.vqvae.code_dim": 8,
      "num_train_steps": 8,  # One epoch of the synthetic data: one evaluation and checkpoint.
      "log_every_steps": 4,
      "num_image_examples": 4,
      "num_prior_samples": 4,
      "num_traversal_inputs": 1,
      "data.batch_size": 32,
      "data.eval_batch_size": 40,
    }
  )
  workdir = str(tmp_path)
  results = train.train_and_evaluate(config, workdir, mesh=meshes.make_mesh(), dataset=dataset)
  assert results == helpers.results(workdir)
  assert results["step"] == 8 and np.isfinite(results["eval_recon"])
  np.testing.assert_allclose(results["eval_kl"], 49 * math.log(32), rtol=1e-6)
  perplexity = helpers.scalar_series(workdir, "train/perplexity")
  assert [s for s, _ in perplexity] == [4, 8]
  assert all(1 <= v <= 32 for _, v in perplexity)
  tags = helpers.event_tags(workdir)
  assert {"train/codes_used_share", "reconstructions", "prior_samples", "traversals"} <= tags
