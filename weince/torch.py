"""``weince.torch``: the PyTorch adapter, ``weince_torch``, under the library's name.

Every public name of ``weince_torch`` is the same object here (``weince.torch.init_state is
weince_torch.init_state``); importing this module imports PyTorch.
"""

from weince_torch import *  # noqa: F403
from weince_torch import __all__ as __all__
