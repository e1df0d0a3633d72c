"""run-orchestrator."""
