"""Calling an executor's request methods directly, as Jina's worker does: in one event loop."""

import asyncio
import inspect

_loop = asyncio.new_event_loop()  # one for every call: a replica's scheduler lives in one loop


def call(method, **kwargs):
    """An executor's @requests method called with `kwargs`, awaited if it is async."""
    answer = method(**kwargs)
    return _loop.run_until_complete(answer) if inspect.isawaitable(answer) else answer
