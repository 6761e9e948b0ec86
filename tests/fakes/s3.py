"""S3 test helpers.

moto's in-memory S3 is not thread-safe: two threads replacing one key can close the buffer a
third is reading. Real S3 applies each request atomically, so `AtomicRequests` lets one request
at a time through to moto. Interleavings *between* requests, which is what conditional writes
(If-None-Match / If-Match) are about, still happen freely.
"""

from __future__ import annotations

import threading
from typing import Any


class AtomicRequests:
    def __init__(self, client: Any):
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call
