"""Moved to ``orchestrator.protocols.assistants.client``; this name keeps old imports working.

One module object under both names (``sys.modules``), so private names and identity hold.
"""

import sys

from orchestrator.protocols.assistants import client as _moved

sys.modules[__name__] = _moved
