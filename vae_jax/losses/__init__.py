"""Losses: distributions, reconstruction likelihoods, ELBO/IWAE terms, KL schedules, TC estimates.

Everything here works on arrays and configs only; models build on it, never the other way round.
"""
