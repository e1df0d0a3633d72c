"""One subpackage per wire protocol the run loop can drive (``responses``; Assistants runs still
live in the top-level ``models``/``client``/``streaming`` modules)."""
