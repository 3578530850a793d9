"""vae_jax: variational autoencoders in JAX/Flax."""
