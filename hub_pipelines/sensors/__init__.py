"""Sensors that turn arrivals (uploads, topic messages) and automation conditions into runs, one module per
workflow (media, orders, analytics); topics.py, automation.py and run_failures.py serve more than one."""
