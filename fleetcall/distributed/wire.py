"""A direct connection from a replica to the scheduler actor: one lean round trip per request.

A Ray actor call costs about a millisecond on a local cluster, most of it Ray's own work on
both sides (the task's submission, its dispatch from Ray's threads to the actor's event loop,
the reply's way back to the caller's loop through a thread hop). That is the whole per-call
price of the shared scheduler, since a call waits one round trip for its grant. So the hot
requests (hello, exchange, poll) travel over a plain TCP connection the actor listens on,
between the two asyncio loops: a length-prefixed pickle each way, nothing else. Ray still
starts the actor, restarts it, and tells a replica where it listens (and the secret to show);
:class:`~fleetcall.distributed.actor.RayChannel` falls back to actor calls when the connection
cannot be made.

**Security.** The connection carries pickles, so only peers that know a secret may speak: the
server makes a random 32-byte token, hands it out only through the (Ray-authenticated) actor
call, and a client's first 32 bytes must be that token (compared in constant time) before any
frame of it is read; anything else closes the connection. The server listens on 127.0.0.1 and
on the Ray node's address (which Ray's own services listen on too); a replica on the actor's
node connects through 127.0.0.1.

**Frames.** 4 bytes of length (big-endian), then a pickle: a request ``(id, method, args)``,
answered by ``(id, ok, value)`` where ``value`` is the method's result or, if it raised, a
message. Requests of one connection run concurrently on the server (a long poll does not hold
up an exchange); replies come back in whatever order they finish.

A lost connection fails every request waiting on it with
:class:`~fleetcall.distributed.channel.SchedulerUnreachable`: the replica places calls locally
and rejoins (see :mod:`fleetcall.distributed.remote`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import pickle
import secrets
import struct
from collections.abc import Sequence
from typing import Any

from fleetcall.distributed.channel import SchedulerUnreachable, cancel_and_wait

__all__ = ["TOKEN_BYTES", "WireClient", "WireServer"]

log = logging.getLogger("fleetcall.distributed")

TOKEN_BYTES = 32            # the secret a client shows first
AUTH_TIMEOUT_S = 10.0       # a connection that does not show it within this is closed
MAX_UNAUTHENTICATED = 64    # connections yet to show it; a new one past this closes the oldest
MAX_FRAME = 64 * 1024**2    # bytes: a longer frame is a broken peer (the connection closes)
HIGH_WATER = 1024**2        # bytes queued on a socket past which a writer waits for it to drain
_HEADER = struct.Struct("!I")


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next object on ``reader``; EOFError when the peer closed it."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if size > MAX_FRAME:
            raise EOFError(f"a frame of {size} bytes (most {MAX_FRAME})")
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError as exc:
        raise EOFError("connection closed") from exc


def _frame(obj: Any) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


async def _write(writer: asyncio.StreamWriter, frame: bytes) -> None:
    writer.write(frame)
    if writer.transport.get_write_buffer_size() > HIGH_WATER:
        await writer.drain()


def _request(frame: Any) -> tuple[int, str, tuple[Any, ...]]:
    """``frame`` as a request ``(id, method, args)``; ValueError if it is not one."""
    if not (isinstance(frame, tuple) and len(frame) == 3 and type(frame[0]) is int
            and type(frame[1]) is str and type(frame[2]) is tuple):
        raise ValueError(f"not a request (id, method, args): {type(frame).__name__}")
    return frame


class WireServer:
    """Answers requests for ``methods`` of ``target`` (coroutine methods) over TCP.

    :meth:`start` listens (once) and returns the port and the token clients must show;
    :meth:`aclose` closes the listener and every connection (their requests are cancelled).
    """

    def __init__(self, target: object, methods: Sequence[str]) -> None:
        self.target = target
        self.methods = frozenset(methods)
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self.port: int | None = None                  # set once listening
        self.requests = 0                             # requests answered (any method)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()  # each connection's serving task
        self._unauthenticated: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # oldest first
        self.evicted = 0                              # connections closed to make room

    async def start(self, hosts: Sequence[str]) -> int:
        """Listen on ``hosts`` (one port for all, chosen by the system); the port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, list(hosts), 0)
            self.port = self._server.sockets[0].getsockname()[1]
        assert self.port is not None
        return self.port

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await cancel_and_wait(list(self._connections))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)   # owned by this server: aclose() ends it
        self._admit(task, writer)
        try:
            try:
                async with asyncio.timeout(AUTH_TIMEOUT_S):
                    shown = await reader.readexactly(TOKEN_BYTES)
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                return
            finally:
                self._unauthenticated.pop(task, None)
            if not hmac.compare_digest(shown, self.token):
                log.warning("shared scheduler: a connection from %s showed a wrong token: "
                            "closed", writer.get_extra_info("peername"))
                return
            await self._requests(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()

    def _admit(self, task: asyncio.Task[None], writer: asyncio.StreamWriter) -> None:
        """Count a connection yet to show the token; past :data:`MAX_UNAUTHENTICATED` the
        oldest such is closed (its read then ends), so silent or slow peers cannot hold the
        actor's sockets while a replica, which shows the token at once, still gets in."""
        self._unauthenticated[task] = writer
        while len(self._unauthenticated) > MAX_UNAUTHENTICATED:
            oldest = next(iter(self._unauthenticated))
            self._unauthenticated.pop(oldest).transport.abort()
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 1000 == 0:
                log.warning("shared scheduler: over %d connections have not shown the token: "
                            "closing the oldest (%d so far)", MAX_UNAUTHENTICATED, self.evicted)

    async def _requests(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Serve one authenticated connection until it closes (its requests then end too)."""
        async with asyncio.TaskGroup() as requests:
            running: set[asyncio.Task[None]] = set()
            try:
                while True:
                    try:
                        rid, method, args = _request(await _read_frame(reader))
                    except (EOFError, OSError):
                        return  # the replica hung up (or died)
                    except Exception as exc:  # a frame that is no request: a broken peer
                        log.warning("shared scheduler: a bad request frame (%s: %s): "
                                    "connection closed", type(exc).__name__, exc)
                        return
                    request = requests.create_task(self._answer(writer, rid, method, args))
                    running.add(request)
                    request.add_done_callback(running.discard)
            finally:
                for request in running:  # the replica is gone: nobody reads the answers
                    request.cancel()

    async def _answer(self, writer: asyncio.StreamWriter, rid: int, method: str,
                      args: tuple[Any, ...]) -> None:
        self.requests += 1
        if method not in self.methods:
            reply: tuple[int, bool, Any] = (rid, False, f"no method {method!r}")
        else:
            try:
                reply = (rid, True, await getattr(self.target, method)(*args))
            except Exception as exc:  # the method's bug: the replica hears it, goes local
                log.exception("shared scheduler: %s failed", method)
                reply = (rid, False, f"{method} failed: {type(exc).__name__}: {exc}")
        try:
            await _write(writer, _frame(reply))
        except OSError:
            pass  # the connection is gone; its reader ends the connection


class WireClient:
    """A replica's connection to a :class:`WireServer` (see the module docstring).

    Made by :meth:`connect`; :meth:`call` sends a request and waits for its answer
    (:class:`SchedulerUnreachable` if the connection is or gets lost, or the server says the
    method failed); :meth:`aclose` closes it. One task reads the answers; it is owned here.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}  # request id -> its answer
        self._next = 0
        self._lost: str | None = None                       # why the connection is gone
        self.loop = asyncio.get_running_loop()
        self._reader = self.loop.create_task(self._read(reader), name="scheduler-wire")

    @classmethod
    async def connect(cls, host: str, port: int, token: bytes,
                      timeout_s: float = 5.0) -> WireClient:
        """Connect and show ``token``. OSError (or TimeoutError) if it cannot connect."""
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(token)
        return cls(reader, writer)

    @property
    def lost(self) -> bool:
        return self._lost is not None

    async def call(self, method: str, *args: Any) -> Any:
        if self._lost is not None:
            raise SchedulerUnreachable(self._lost)
        rid, self._next = self._next, self._next + 1
        answer = self.loop.create_future()
        self._pending[rid] = answer
        try:
            await _write(self._writer, _frame((rid, method, args)))
            return await answer
        except OSError as exc:
            del self._pending[rid]
            answer.cancel()
            self._lose(f"the connection to the scheduler failed: {exc}")
            raise SchedulerUnreachable(self._lost) from exc
        finally:
            self._pending.pop(rid, None)

    async def aclose(self) -> None:
        self._lose("the connection to the scheduler was closed")
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                rid, ok, value = await _read_frame(reader)
                answer = self._pending.get(rid)
                if answer is None or answer.done():
                    continue  # its caller gave up (a timeout)
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(SchedulerUnreachable(f"the scheduler: {value}"))
        except (EOFError, OSError) as exc:
            self._lose(f"the connection to the scheduler was lost ({exc})")
        except Exception as exc:  # a frame that is no answer: the connection is useless
            self._lose(f"a bad answer from the scheduler ({type(exc).__name__}: {exc})")

    def _lose(self, why: str) -> None:
        """The connection is gone: every request waiting on it fails."""
        if self._lost is None:
            self._lost = why
        self._writer.close()
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(SchedulerUnreachable(self._lost))
