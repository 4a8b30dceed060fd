"""fedrec experiments package."""
