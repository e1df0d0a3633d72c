"""Helpers of the worker tests: tools for worker subprocesses and the harness that runs them."""
