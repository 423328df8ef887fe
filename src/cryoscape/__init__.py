"""cryoscape: heterogeneous single-particle cryo-EM, from atoms to images and back.

The top-level import is light on purpose (the command line must start fast); import the layers you need:
``cryoscape.io``, ``cryoscape.geometry``, ``cryoscape.physics``, ``cryoscape.data``.
"""

__version__ = "0.1.0"
