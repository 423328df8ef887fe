"""Option checks of the command line: the error names the option, the bound or the choices, and the value."""

import math

import pytest

from cryoscape.utils.checks import at_least, one_of
from cryoscape.io.errors import InputError


def test_at_least():
    at_least("--k", 3, 1)
    at_least("--reg", 0.0, 0)
    for bad in (0, -2, math.nan):
        with pytest.raises(InputError) as exc:
            at_least("--k", bad, 1)
        assert "--k" in str(exc.value) and "≥ 1" in str(exc.value)


def test_one_of():
    one_of("--interp", "nearest", ("trilinear", "nearest"))
    with pytest.raises(InputError) as exc:
        one_of("--interp", "cubic", ("trilinear", "nearest"))
    assert str(exc.value).endswith("must be trilinear or nearest, got 'cubic'")
    with pytest.raises(InputError) as exc:
        one_of("--fmt", "x", ("a", "b", "c"))
    assert "must be a, b or c" in str(exc.value)
