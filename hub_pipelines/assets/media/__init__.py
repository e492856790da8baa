"""The media workflow: one dynamic partition per upload."""
