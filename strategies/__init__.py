"""fedrec strategies package."""
