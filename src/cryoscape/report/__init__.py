"""Plots and reports of runs (matplotlib, Agg backend)."""
