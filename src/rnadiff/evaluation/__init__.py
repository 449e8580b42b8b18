"""Metrics (pure functions on arrays), baselines and plots."""
