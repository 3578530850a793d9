"""FID and improved precision/recall: the formulas, the feature networks and the evaluate groups."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.linalg

from tests import helpers
from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import runs
from vae_jax.data import load_dataset
from vae_jax.errors import ConfigError
from vae_jax.evaluation import features, sample_quality
from vae_jax.evaluation import suite as eval_suite
from vae_jax.evaluation.features import network, store
from vae_jax.evaluation.inference import Inference
from vae_jax.models import build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib
from vae_jax.training.checkpoints import Checkpointer


def _closed_form_scipy(mu1, s1, mu2, s2):
  """The textbook formula with scipy's general matrix square root (an independent route)."""
  root = scipy.linalg.sqrtm(s1 @ s2)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root)))


def test_frechet_distance_matches_hand_computed_gaussians():
  # Diagonal: |mu|^2 = 5, tr = (1 + 4) + (4 + 9) - 2 (sqrt(4) + sqrt(36)) = 2.
  d = sample_quality.frechet_distance([0, 0], np.diag([1.0, 4]), [1, 2], np.diag([4.0, 9]))
  assert d == pytest.approx(7.0, abs=1e-12)
  # S1 = I, S2 with eigenvalues 1 and 3: tr (S1 S2)^(1/2) = 1 + sqrt(3).
  s2 = np.array([[2.0, 1.0], [1.0, 2.0]])
  d = sample_quality.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), s2)
  assert d == pytest.approx(6 - 2 * (1 + np.sqrt(3)), abs=1e-12)
  # Singular covariances (rank 1 each, orthogonal): no cross term, FID = tr S1 + tr S2.
  d = sample_quality.frechet_distance([0, 0], np.diag([1.0, 0]), [0, 0], np.diag([0.0, 1]))
  assert d == pytest.approx(2.0, abs=1e-12)


def test_frechet_distance_matches_scipy_on_random_covariances():
  rng = np.random.default_rng(0)
  for _ in range(5):
    a, b = rng.normal(size=(2, 6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=(2, 6))
    expected = _closed_form_scipy(mu1, s1, mu2, s2)
    assert sample_quality.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_against_noise_large():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
  assert abs(sample_quality.fid(x, x)) < 1e-8
  # Two halves of one draw: only sampling error, small against the total variance; uniform
  # noise far away: large.
  same = sample_quality.fid(x[:1000], x[1000:])
  assert 0 < same < 0.02 * np.trace(np.cov(x, rowvar=False))
  assert sample_quality.fid(x, rng.uniform(5, 10, size=(2000, 16))) > 100 * same
  # Draws of two known Gaussians: their FID converges to the closed form.
  mu2, scale = np.full(16, 0.5), np.diag(np.linspace(0.5, 2.0, 16))
  draws_a = rng.normal(size=(50_000, 16))
  draws_b = mu2 + rng.normal(size=(50_000, 16)) @ scale
  expected = sample_quality.frechet_distance(np.zeros(16), np.eye(16), mu2, scale @ scale)
  assert sample_quality.fid(draws_a, draws_b) == pytest.approx(expected, rel=0.02)


def test_knn_radii_are_the_kth_nearest_other_point():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(37, 5))
  d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
  for k in (1, 3):
    expected = np.sort(d, axis=1)[:, k]  # Column 0 is the point itself.
    np.testing.assert_allclose(sample_quality.knn_radii(x, k, chunk=8), expected, rtol=1e-4)


def test_precision_recall_of_identical_disjoint_and_hand_made_sets():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(300, 8))
  assert sample_quality.precision_recall(x, x, k=3) == {"precision": 1.0, "recall": 1.0}
  far = sample_quality.precision_recall(x, x + 100.0, k=3)
  assert far == {"precision": 0.0, "recall": 0.0}
  # 1-D, k = 1. Real 0, 1, 3, 7: radii 1, 1, 2, 4. Generated 0.5, 2.6, 5.5, 20: radii 2.1, 2.1,
  # 2.9, 14.5. Precision: 0.5 (ball of 0), 2.6 (ball of 3), 5.5 (ball of 7) are inside, 20 is
  # not: 3/4. Recall: 0 and 1 (ball of 0.5), 3 (of 2.6), 7 (of 5.5 and 20): 4/4.
  real = np.array([[0.0], [1.0], [3.0], [7.0]])
  generated = np.array([[0.5], [2.6], [5.5], [20.0]])
  got = sample_quality.precision_recall(real, generated, k=1)
  assert got == {"precision": 0.75, "recall": 1.0}
  # Generated 0.5, 2.6, 30, 40: radii 2.1, 2.1, 10, 10. Precision: 0.5 and 2.6 only, 2/4.
  # Recall: 7 is 4.4 from 2.6 and 23 from 30, outside both balls: 3/4.
  generated = np.array([[0.5], [2.6], [30.0], [40.0]])
  got = sample_quality.precision_recall(real, generated, k=1)
  assert got == {"precision": 0.5, "recall": 0.75}


def test_precision_recall_do_not_depend_on_the_chunk_size():
  rng = np.random.default_rng(4)
  real, generated = rng.normal(size=(101, 6)), rng.normal(0.3, 1.2, size=(77, 6))
  whole = sample_quality.precision_recall(real, generated, k=3, chunk=1000)
  assert sample_quality.precision_recall(real, generated, k=3, chunk=7) == whole
  assert 0 < whole["precision"] < 1 and 0 < whole["recall"] < 1
