"""WEINCE for jax (in progress)."""
