"""Methods: one subpackage each, with a config dataclass and a ``run`` entry point returning a result."""
