"""``weince.cupy``: the CuPy adapter, ``weince_cupy``, under the library's name.

Every public name of ``weince_cupy`` is the same object here (``weince.cupy.init_state is
weince_cupy.init_state``); importing this module imports CuPy.
"""

from weince_cupy import *  # noqa: F403
from weince_cupy import __all__ as __all__
