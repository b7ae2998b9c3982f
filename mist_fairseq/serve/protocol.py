"""The service's HTTP protocol: uvicorn's h11 protocol with a header timeout.

uvicorn times out idle keep-alive connections and nothing else: a client that opens a connection and
sends its request line and headers a byte at a time (or never finishes them) holds a connection slot
for as long as it likes, and enough of them fill ``--max-connections`` so that every good client gets
503. Here a connection whose request headers are not complete ``header_timeout`` seconds after its
first byte (or after it was opened) is closed. The request body has its own limit
(``--read-timeout``, :mod:`mist_fairseq.serve.app`).
"""

import asyncio
from typing import Optional

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout: float = 10.0  # seconds; set per server by :func:`protocol_class`

    _header_task: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_task is None and self._between_requests():
            self._arm_header_timer()  # the first bytes of a further request on a kept-alive connection
        super().data_received(data)
        if self._header_task is not None and not self._between_requests():
            self._header_task.cancel()  # the headers are complete: a request cycle runs
            self._header_task = None

    def connection_lost(self, exc) -> None:
        if self._header_task is not None:
            self._header_task.cancel()
            self._header_task = None
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        """No request is being answered: the next request's headers are still to come."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self.header_timeout > 0:
            self._header_task = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_task = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()  # h11 cannot answer a request it has not parsed: the connection just ends


def protocol_class(header_timeout: float) -> type:
    """A :class:`HeaderTimeoutProtocol` with this timeout (seconds; 0 = none), for ``uvicorn.run(http=...)``."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(header_timeout)})
