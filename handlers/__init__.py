"""Example tools."""
