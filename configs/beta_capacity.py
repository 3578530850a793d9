"""Controlled-capacity beta-VAE (Burgess et al. 2018) on procedural dSprites.

Loss = -recon + gamma * |KL - C|, with C rising linearly from 0 to 25 nats over 100,000 steps and
gamma = 1000, Adam with learning rate 5e-4 and batch 64 (Burgess et al. 2018, "Understanding
disentangling in beta-VAE", dSprites experiments). Same architecture and data as beta4.py.
`:quick` shortens the schedule to 3,000 steps with C reaching 25 nats at step 2,000.
"""

import ml_collections

from configs import beta4


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = beta4.get_config(variant)
  config.objective.kl_penalty = "capacity"
  config.objective.capacity_max = 25.0
  config.objective.capacity_gamma = 1000.0
  config.objective.capacity_steps = 100_000
  config.optimizer.learning_rate = 5e-4
  if variant == "quick":
    config.objective.capacity_steps = 2_000
  return config
