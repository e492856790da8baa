"""Media domain: plain-Python processing of uploaded images, videos and PDFs (no Dagster)."""
