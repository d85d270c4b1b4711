"""Simulated radio: virtual clock, radio and mobility models, scenarios, metrics, plots."""
