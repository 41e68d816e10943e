"""Studies: one module per paper experiment (genuine, drift, spectral)."""
