"""ehrsync package."""
