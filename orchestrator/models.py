"""Moved to ``orchestrator.protocols.assistants.models``; this name keeps old imports working.

One module object under both names (``sys.modules``), so private names and identity hold.
"""

import sys

from orchestrator.protocols.assistants import models as _moved

sys.modules[__name__] = _moved
