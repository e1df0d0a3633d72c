"""Server-sent events for every protocol: the incremental SSE parser and the reader base that
pulls frames from one aiohttp response (a cut maps to ``APIConnectionError``; ``finish`` ends
it). Each protocol's stream decodes the frames into its own events."""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import aiohttp
from msgspec import Struct

from orchestrator import errors
from orchestrator.http import transport

__all__ = ["SSEDecoder", "SSEMessage", "SSEReader"]

E = TypeVar("E")


class SSEMessage(Struct, frozen=True):
    """One dispatched SSE frame: the ``event`` name (default ``message``) and its ``data``."""

    event: str
    data: bytes


class SSEDecoder:
    """Incremental SSE parser (WHATWG rules): feed it chunks split anywhere.

    Lines end in LF, CRLF or CR; multi-line ``data`` joins with LF; ``:`` comments, ``id`` and
    ``retry`` are ignored; a blank line dispatches; a frame without data is dropped.

    Each byte is searched for line ends once, when its chunk arrives: the unfinished last line
    is kept as a list of pieces and joined once it ends, so a 4 MiB event costs linear time
    whatever the chunk sizes (``scanned`` counts the bytes searched).
    """

    __slots__ = ("_data", "_event", "_pending", "_skip_lf", "_started", "scanned")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # pieces of the line not ended yet
        self._skip_lf = False  # the last chunk ended in CR: a leading LF is its pair
        self._started = False
        self._event: str | None = None
        self._data: list[bytes] = []
        #: Bytes searched for line ends so far: at most twice the bytes fed.
        self.scanned = 0

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Parse a chunk; return the frames it completed."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            chunk = chunk.removeprefix(b"\n")
        if not chunk:
            return []
        self.scanned += len(chunk)  # the search for the last line end
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if end < 0:  # no line ends here: one more piece of the pending line
            self._pending.append(chunk)
            return []
        self._skip_lf = end == len(chunk) - 1 and chunk[end] == 0x0D
        head, rest = chunk[: end + 1], chunk[end + 1 :]
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
        self._pending = [rest] if rest else []
        self.scanned += len(head)  # the split into lines: each byte once, when its line ends
        # only ``head`` is split; it ends in a line end, so the last piece is always empty
        lines = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        lines.pop()
        if not self._started:
            self._started = True
            lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM may open the stream
        out: list[SSEMessage] = []
        for line in lines:
            frame = self._line(line)
            if frame is not None:
                out.append(frame)
        return out

    def _line(self, line: bytes) -> SSEMessage | None:
        if not line:
            data, event = self._data, self._event
            self._data, self._event = [], None
            if not data:
                return None
            return SSEMessage(event or "message", b"\n".join(data))
        if line.startswith(b":"):
            return None
        field, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        return None  # id, retry and unknown fields carry nothing we use


class SSEReader(Generic[E]):
    """The events of one SSE response, its frames pulled as needed and decoded by the
    protocol's ``decode`` (None: the protocol's end marker). Ends at that marker or a clean
    EOF; a cut raises. Owned by the client's stream context manager, which ``release``s the
    response on exit."""

    def __init__(self, response: aiohttp.ClientResponse | None, *, endpoint: str) -> None:
        self._response = response
        self._endpoint = endpoint
        self._decoder = SSEDecoder()
        self._pending: collections.deque[SSEMessage] = collections.deque()
        self._finished = response is None
        self.status = response.status if response is not None else 200
        self.request_id = response.headers.get("x-request-id") if response is not None else None

    @property
    def finished(self) -> bool:
        """The stream ended (its end marker, EOF or an error)."""
        return self._finished

    async def next_message(self) -> SSEMessage | None:
        """The next frame, reading more of the response when none is buffered."""
        while not self._pending:
            response = self._response
            if self._finished or response is None:
                return None
            await self._read(response)
        return self._pending.popleft()

    def decode(self, message: SSEMessage) -> E | None:
        """The protocol's event for one frame (None: the end marker); its errors raise."""
        raise NotImplementedError

    async def next_event(self) -> E:
        """The next event; ``StopAsyncIteration`` at the end; an error event ends the stream."""
        message = await self.next_message()
        if message is None:
            raise StopAsyncIteration
        try:
            event = self.decode(message)
        except errors.StreamError:
            self.finish()
            raise
        if event is None:
            self.finish()
            raise StopAsyncIteration
        return event

    def release(self) -> None:
        """Give the response back: its connection is reused only when read to the end."""
        response = self._response
        if response is None:
            return
        if self._finished:
            response.release()
        else:
            response.close()  # half-read: the connection cannot be reused

    def finish(self) -> None:
        """End the stream here (frames still buffered are dropped)."""
        self._finished = True
        self._pending.clear()

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        try:
            chunk = await response.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.finish()
            raise transport.connection_error(self._endpoint, exc) from exc
        if not chunk:
            # A clean end without an end marker: an unterminated last frame is dropped.
            self.finish()
            return
        self._pending.extend(self._decoder.feed(chunk))
