"""The orders workflow's own services and settings."""
