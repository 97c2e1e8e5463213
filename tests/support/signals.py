"""Ctrl-C as an interactive shell delivers it, whatever disposition the test run inherited.

Under `nohup` (or a CI runner that ignores SIGINT) the test process starts with SIGINT ignored, and so
does every child it starts: an ignored signal survives `exec`, and Python then never installs its
KeyboardInterrupt handler. Tests of Ctrl-C set the disposition up themselves with `sigint_raises`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigint_raises() -> Iterator[None]:
    """Within: SIGINT raises KeyboardInterrupt in this process, and children started here get the default
    disposition (a handler, unlike an ignored signal, is reset at `exec`), so Python installs its own."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
