"""The analytics workflow's own services."""
