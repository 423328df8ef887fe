"""Former name of :mod:`cryoscape.methods.reconstruct`, kept for the callers that import it by that name."""

from ..reconstruct import BackprojectConfig, BackprojectResult, backproject, check_config, split_halves

__all__ = ["BackprojectConfig", "BackprojectResult", "backproject", "check_config", "split_halves"]
