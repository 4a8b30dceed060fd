"""fedrec recommender package."""
