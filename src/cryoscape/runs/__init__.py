"""Layer 7: orchestration. A method's result → files, figures and one ``metrics.json`` in a run folder.

This is the only layer that writes run folders (:class:`RunFolder`); methods return result objects.
"""

from .folder import METRICS_FILE, SCHEMA_KEYS, UNITS, RunFolder, read_metrics, validate_metrics, write_metrics

__all__ = ["RunFolder", "write_metrics", "read_metrics", "validate_metrics", "METRICS_FILE", "SCHEMA_KEYS",
           "UNITS"]
