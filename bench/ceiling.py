"""The ceiling: a bare Litestar route returning a constant, served like the real app.

Every figure of the benchmark is also given as a ratio to this app measured in the same run
on the same machine, so the numbers travel between machines.
"""

from litestar import Litestar, get


@get("/", sync_to_thread=False)
def constant() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[constant])
