"""A process taking its turn at a chdb data folder, driven line by line on stdin by the lending tests.

Whenever it has opened the folder it writes its name as the next row of the folder's `turns` table, so
the table holds the order in which the processes had the folder.

- `holder NAME FOLDER`: opens the folder and prints `held`; then each `lend` line lends the folder to
  the processes waiting for it, writes its turn again and prints the loan as JSON (`null` when nobody
  waited); `turns` prints the table's names in order.
- `waiter NAME FOLDER`: opens the folder (waiting for its turn) and prints `opened`; the next line
  closes it and prints `closed`.
"""

from __future__ import annotations

import json
import os
import sys

from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse


def take_turn(warehouse: ChdbWarehouse, name: str) -> None:
    warehouse.execute("CREATE TABLE IF NOT EXISTS turns (n UInt32, who String) ENGINE = MergeTree ORDER BY n")
    warehouse.execute("INSERT INTO turns SELECT count() + 1, {who:String} FROM turns", {"who": name})


def say(line: str) -> None:
    print(line, flush=True)


def main() -> None:
    role, name, folder = sys.argv[1:4]
    warehouse = ChdbWarehouse(path=folder, lock_wait_seconds=300)
    take_turn(warehouse, name)
    if role == "waiter":
        say("opened")
        sys.stdin.readline()
        warehouse.close()
        say("closed")
        sys.stdin.readline()
        return
    say("held")
    for command in sys.stdin:
        if command.strip() == "lend":
            loan = warehouse.lend_to_waiting_processes()
            if loan is not None:
                take_turn(warehouse, name)
            say(json.dumps(loan and {"borrowers": loan.borrowers, "seconds": loan.seconds}))
        elif command.strip() == "turns":
            say(json.dumps(warehouse.query_df("SELECT who FROM turns ORDER BY n")["who"].tolist()))


if __name__ == "__main__":
    main()
    # chdb's engine threads can hang the interpreter's shutdown once a session was opened and closed.
    os._exit(0)
