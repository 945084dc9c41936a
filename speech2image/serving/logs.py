"""A replica's log: one line, not a stack, for a request refused by design.

Jina logs every exception an executor raises at ERROR with its stack (its `quiet_error` logs
an empty line instead). Bad input, busy, out of time and cancelled are the service working as
designed, and a client can cause as many as it likes: each becomes one WARNING line naming the
error. Anything else (a bug, a model failing) keeps its stack.
"""

import logging

from ..errors import Busy, Cancelled, DeadlineExceeded, InvalidRequest

BY_DESIGN = (InvalidRequest, Busy, DeadlineExceeded, Cancelled)


class OneLineRefusals(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BY_DESIGN):
            record.msg, record.args = f"refused: {type(error).__name__}: {error}", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def one_line_refusals(runtime_name: str) -> None:
    """Filter the loggers of this replica's Jina runtime and server (named `<runtime_name>` and
    `<runtime_name>/…`, made before the executor is)."""
    for name in list(logging.Logger.manager.loggerDict):
        if name == runtime_name or name.startswith(f"{runtime_name}/"):
            logging.getLogger(name).addFilter(OneLineRefusals())
