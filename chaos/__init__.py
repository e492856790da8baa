"""The chaos run: the whole production wiring on this machine, under a workload and a nemesis, checked after.

`python -m chaos` (`make chaos`) starts the services (`services.py`) and Dagster's processes
(`deployment.py`), feeds work (`workload.py`), injects faults (`nemesis.py`), waits for the system to
drain and checks every guarantee (`checker.py`), then prints and writes the report (`report.py`).
"""
