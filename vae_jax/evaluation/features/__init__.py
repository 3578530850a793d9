"""Feature networks for the sample-quality metrics (`fid`, `precision_recall`).

Train one per dataset with `python -m vae_jax.evaluation.features train --dataset=mnist
--manual_dir=DATA --workdir=FEATS/mnist`; `vae_jax.evaluate --metrics=fid,precision_recall
--features_workdir=FEATS/mnist` then scores a run's samples in its feature space. See `network`
(the classifier) and `store` (training, saving, checking, loading).
"""

from vae_jax.evaluation.features.network import FeatureNet
from vae_jax.evaluation.features.store import (
  FeatureNetwork,
  TrainOptions,
  check,
  load,
  train_and_save,
)

__all__ = ["FeatureNet", "FeatureNetwork", "TrainOptions", "check", "load", "train_and_save"]
