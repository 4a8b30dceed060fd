"""fedrec configs package."""
