"""Helpers of the worker tests: tools for worker subprocesses and the harness that runs them."""

#: Set by the PostgreSQL crash test: each ``side_effects`` call asks the database whether its
#: worker still holds the job. Kept here so that the test process never imports
#: ``side_effects`` (that would register its tools on the default registry, where other tests'
#: scripted runs would call them with made-up paths).
CLAIM_CHECK_DSN = "ORCH_TEST_CLAIM_CHECK_DSN"
