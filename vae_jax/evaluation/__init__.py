"""Evaluation: metric suite, jitted inference, likelihoods, diagnostics, images, disentanglement.

`suite.evaluate_run` is what `python -m vae_jax.evaluate` runs; `inference.Inference` is the one
way every evaluation, tool and TensorBoard summary calls a trained model.
"""
