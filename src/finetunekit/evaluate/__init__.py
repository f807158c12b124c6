"""Metrics and reports: the same held-out numbers for the base model and the tuned one."""
