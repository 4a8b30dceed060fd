"""fedrec client package."""
