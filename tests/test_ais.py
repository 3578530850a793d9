"""AIS and BDMC against a linear-Gaussian model whose log p(x) is known in closed form.

p(z) = N(0, I), p(x|z) = N(z W + b, sigma^2 I), so p(x) = N(x; b, W^T W + sigma^2 I). The
likelihood is sharp (sigma = 0.05, posterior standard deviations 0.12-0.32 against the prior's 1),
so importance sampling from the prior is far off and the schedule has work to do.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_config
from vae_jax.evaluation import ais, annealing, bdmc, likelihood
from vae_jax.losses import distributions
from vae_jax.models import Capabilities, Model, ModelOutput
from vae_jax.training import mesh as meshes
from vae_jax.training.keys import run_keys

SHAPE = (4, 4, 1)
D, LATENT, SIGMA = 16, 3, 0.05
SCALES = np.array([0.4, 0.25, 0.15])


class LinearGaussian(Model):
  """The joint-density part of the model contract, with W and b set by the test."""

  capabilities = Capabilities(prior=True, joint_density=True)

  def setup(self):  # noqa: D102
    self.W = self.param("W", nn.initializers.zeros, (LATENT, D))
    self.b = self.param("b", nn.initializers.zeros, (D,))

  def prior_sample(self, keys, y=None):
    return distributions.standard_normal_noise(keys, LATENT)

  def log_prior(self, z, y=None):
    return distributions.standard_normal_log_density(z)

  def decode(self, z, y=None):
    return (z @ self.W + self.b).reshape(z.shape[0], *SHAPE)

  def decode_latent(self, z, y=None):
    return ModelOutput(out=self.decode(z), z=z)


def _problem(n: int = 100):
  rng = np.random.default_rng(1)
  u, _ = np.linalg.qr(rng.normal(size=(D, LATENT)))
  w, b = SCALES[:, None] * u.T, rng.uniform(0.3, 0.7, D)
  x = rng.normal(size=(n, LATENT)) @ w + b + SIGMA * rng.normal(size=(n, D))
  images = np.clip(np.round(x * 255), 0, 255).astype(np.uint8).reshape(n, *SHAPE)
  return {"W": w, "b": b}, images


PARAMS, IMAGES = _problem()
CONFIG = tiny_config(
  **{"data.binarize": "none", "model.likelihood": "gaussian", "model.gaussian_sigma": SIGMA}
)


def exact_log_px(x: np.ndarray) -> np.ndarray:
  """log N(x; b, W^T W + sigma^2 I) of examples x [n, ...] (float64)."""
  x = np.asarray(x, np.float64).reshape(len(x), D)
  cov = PARAMS["W"].T @ PARAMS["W"] + SIGMA**2 * np.eye(D)
  diff = x - PARAMS["b"]
  maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
  return -0.5 * (maha + np.linalg.slogdet(cov)[1] + D * np.log(2 * np.pi))


LOG_PX = exact_log_px(IMAGES / 255.0)


def _setup(num_devices: int):
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  params = jax.tree.map(jnp.float32, PARAMS)
  return mesh, jax.device_put({"params": params}, meshes.replicated(mesh))


def _ais(num_steps, chains=8, num_devices=4, batch_size=40, images=IMAGES, schedule="sigmoid"):
  mesh, model_vars = _setup(num_devices)
  settings = ais.Settings(chains, num_steps, 10, schedule, batch_size)
  rng = likelihood.evaluation_key(CONFIG.seed)
  model = LinearGaussian()
  return ais.log_likelihoods(model, model_vars, images, None, CONFIG, mesh, rng, settings)


def _bdmc(num_steps, n=60, num_devices=4, batch_size=40, chains=4):
  mesh, model_vars = _setup(num_devices)
  settings = ais.Settings(chains, num_steps, 10, "sigmoid", batch_size)
  return bdmc.bdmc_bounds(
    LinearGaussian(),
    model_vars,
    n,
    None,
    CONFIG,
    mesh,
    likelihood.evaluation_key(CONFIG.seed),
    run_keys(CONFIG.seed)["sample"],
    settings,
  )


def test_schedules_run_from_zero_to_one():
  np.testing.assert_allclose(annealing.betas(4, "linear"), [0.0, 0.25, 0.5, 0.75, 1.0])
  # sigmoid(-4, -2, 0, 2, 4) rescaled to [0, 1]: (0.1192029 - 0.0179862) / 0.9640276 = 0.1049936.
  np.testing.assert_allclose(annealing.betas(4), [0.0, 0.1049936, 0.5, 0.8950064, 1.0], atol=1e-7)
  np.testing.assert_array_equal(annealing.betas(1), [0.0, 1.0])
  long = annealing.betas(1000)
  assert np.all(np.diff(long) > 0) and long[0] == 0.0 and long[-1] == 1.0
  np.testing.assert_allclose(long + long[::-1], 1.0, atol=1e-12)  # Symmetric about t = T / 2.
  assert long[100] < 0.03  # Sigmoidal: small steps near the prior...
  assert long[500] - long[499] > 2 * (long[1] - long[0])  # ...larger ones in the middle.


def test_step_size_moves_towards_the_target_acceptance():
  eps = jnp.array([0.1, 0.1, 0.1, 1.0, 1e-4])
  out = annealing.adapt_step_size(eps, jnp.array([0.65, 1.0, 0.0, 1.0, 0.0]))
  expected = [0.1, 0.1 * np.exp(0.1 * 0.35), 0.1 * np.exp(-0.1 * 0.65), 1.0, 1e-4]
  np.testing.assert_allclose(out, expected, rtol=1e-6)  # The last two are clipped to the range.


def test_hmc_transition_leaves_a_gaussian_invariant():
  # Target N(0, 0.3^2) per dimension: beta = 1 with prior N(0, 1) and likelihood
  # N(0; z, 0.3^2 / (1 - 0.3^2)) as a function of z.
  var = 0.3**2 / (1 - 0.3**2)
  densities = annealing.Densities(
    distributions.standard_normal_log_density,
    lambda z: distributions.gaussian_log_density(0.0 * z, z, jnp.full_like(z, np.log(var))),
  )
  keys = jax.random.split(jax.random.key(0), 2000).reshape(200, 10)
  z = 0.3 * annealing._draw(annealing.fold_keys(keys, 0), jax.random.normal, (2,))
  point = annealing._point(densities, z)
  step = jnp.full(keys.shape, 0.2)
  move = jax.jit(
    lambda point, keys_t: annealing.hmc_transition(densities, point, 1.0, step, keys_t, 5)
  )
  for t in range(5):
    point, accept = move(point, annealing.fold_keys(keys, t + 1))
  assert 0.5 < float(accept.mean()) <= 1.0
  moved = np.asarray(point.z).reshape(-1, 2)
  assert np.mean(np.abs(moved - np.asarray(z).reshape(-1, 2)) > 1e-3) > 0.5  # Chains moved...
  np.testing.assert_allclose(moved.std(axis=0), 0.3, rtol=0.05)  # ...within the target (4000 z).
  np.testing.assert_allclose(moved.mean(axis=0), 0.0, atol=0.02)


@pytest.fixture(scope="module")
def schedule_runs():
  """Forward AIS of the 100 examples on 4 devices, 40 per call, for T = 1, 10, 30 and 1000."""
  return {t: _ais(t) for t in (1, 10, 30, 1000)}


@pytest.fixture(scope="module")
def short_bdmc():
  """BDMC with T = 10 of 60 simulated examples on 4 devices, 40 per call."""
  return _bdmc(10)


def test_ais_converges_to_the_exact_log_likelihood_as_the_schedule_grows(schedule_runs):
  runs = schedule_runs
  gaps = {t: float(np.mean(LOG_PX - r["log_p"])) for t, r in runs.items()}
  for t, r in runs.items():
    # A stochastic lower bound: the mean gap may dip below 0 by Monte Carlo noise only.
    stderr = np.std(LOG_PX - r["log_p"], ddof=1) / np.sqrt(len(LOG_PX))
    assert gaps[t] >= -3 * stderr, (t, gaps[t], stderr)
  assert gaps[1] > 5.0, gaps  # 8 prior samples are far off...
  assert gaps[1] > gaps[10] > gaps[30] > gaps[1000], gaps  # ...and annealing closes the gap
  assert gaps[1000] < 0.1, gaps
  assert np.all(runs[1]["acceptance"] == 1.0)  # No transitions at T = 1.
  assert 0.6 < runs[1000]["acceptance"].mean() < 0.75  # Step sizes led towards 0.65.


def test_linear_schedule_also_converges():
  gaps = LOG_PX[:40] - _ais(300, images=IMAGES[:40], schedule="linear")["log_p"]
  stderr = gaps.std(ddof=1) / np.sqrt(len(gaps))
  assert -3 * stderr <= gaps.mean() < 0.2, (gaps.mean(), stderr)


def test_bdmc_bounds_bracket_the_exact_log_likelihood_of_simulated_data(short_bdmc):
  short, long = short_bdmc, _bdmc(300)
  # The simulated x are draws of p(x|z) at the kept z.
  resid = short["x"].reshape(-1, D) - (short["z"] @ PARAMS["W"] + PARAMS["b"])
  assert resid.std() == pytest.approx(SIGMA, rel=0.05) and abs(resid.mean()) < 0.005
  np.testing.assert_array_equal(short["x"], long["x"])  # Same data whatever the schedule.
  exact = exact_log_px(short["x"])
  for out in (short, long):
    for side, sign in (("lower", 1), ("upper", -1)):
      # Stochastic bounds: single examples cross the exact value, the mean only by noise.
      slack = sign * (exact - out[side])
      assert slack.mean() >= -3 * slack.std(ddof=1) / np.sqrt(len(slack)), (side, slack.mean())
  gap_short = float(np.mean(short["upper"] - short["lower"]))
  gap_long = float(np.mean(long["upper"] - long["lower"]))
  assert gap_short > 1.0 and 0 < gap_long < 0.1 * gap_short, (gap_short, gap_long)


def test_estimates_do_not_depend_on_devices_or_batching(schedule_runs, short_bdmc):
  # 2 devices and 25 examples per call (rounded up to 26, the last batch padded) against the
  # 4-device, 40-per-call runs: the same values for the same examples.
  got = _ais(10, num_devices=2, batch_size=25, images=IMAGES[:60])["log_p"]
  np.testing.assert_allclose(got, schedule_runs[10]["log_p"][:60], atol=1e-5)
  assert ais.Settings(batch_size=25).batch_for(60, 2) == 26
  other = _bdmc(10, n=30, num_devices=1, batch_size=20)
  for key in ("x", "z", "lower", "upper"):
    np.testing.assert_allclose(other[key], short_bdmc[key][:30], atol=1e-5, err_msg=key)
