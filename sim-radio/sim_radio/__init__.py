"""Simulated radio: virtual clock, radio and mobility models, scenarios, metrics, plots."""

from mesh.compiled import use_compiled

use_compiled(__name__, __path__)
