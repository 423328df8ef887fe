"""Metrics and latent-space tools."""
