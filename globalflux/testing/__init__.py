"""Public testing helpers: the seeded synthetic world with a known answer.

>>> from globalflux.testing import make_world
>>> world = make_world(ny=64, nx=64, n_sites=24)   # doctest: +SKIP

See :mod:`globalflux.testing.synthetic` for what the world contains and why the zoned-forest
method's claims hold in it by construction.
"""

from .synthetic import FACTORS, PREDICTORS, PROTOTYPES, RH_UNITS, World, make_world

__all__ = ["World", "make_world", "FACTORS", "PREDICTORS", "PROTOTYPES", "RH_UNITS"]
