"""``weince.jax``: the JAX adapter, ``weince_jax``, under the library's name.

Every public name of ``weince_jax`` is the same object here (``weince.jax.init_state is
weince_jax.init_state``); importing this module imports JAX.
"""

from weince_jax import *  # noqa: F403
from weince_jax import __all__ as __all__
