"""Atomic models as data: the Cα-chain internal coordinates and rigid alignment."""

from .align import align, aligned_rmsd, kabsch, rmsd
from .chain import ChainCoordinates, central_index, chain_to_internal, internal_to_chain, transition

__all__ = ["align", "aligned_rmsd", "kabsch", "rmsd", "ChainCoordinates", "central_index",
           "chain_to_internal", "internal_to_chain", "transition"]
