"""The ``cryoscape`` command line (thin: options → config → one entry point)."""
