"""The media workflow's own services and settings."""
