"""Datasets: the simulator (and, later, lazy particle datasets)."""
