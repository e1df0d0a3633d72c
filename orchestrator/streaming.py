"""Moved to ``orchestrator.protocols.assistants.streaming``; this name keeps old imports working.

One module object under both names (``sys.modules``), so private names and identity hold.
"""

import sys

from orchestrator.protocols.assistants import streaming as _moved

sys.modules[__name__] = _moved
