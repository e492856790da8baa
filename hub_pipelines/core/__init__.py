"""Plain-Python building blocks shared by every workflow. Nothing here imports Dagster."""
