"""fedrec server package."""
