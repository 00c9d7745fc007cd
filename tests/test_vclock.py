"""The virtual clock: time jumps to the next timer, nothing really sleeps, refusals are loud."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from fleetcall.errors import VirtualClockError
from fleetcall.vclock import VirtualEventLoop, VirtualEventLoopPolicy, is_virtual, run_virtual


def now() -> float:
    return asyncio.get_running_loop().time()


# --- time jumps -------------------------------------------------------------------------------

def test_an_hour_of_virtual_time_takes_milliseconds() -> None:
    async def main() -> float:
        await asyncio.sleep(3600)
        return now()

    wall = time.perf_counter()
    assert run_virtual(main()) == 3600.0
    assert time.perf_counter() - wall < 1.0


def test_start_sets_the_initial_time() -> None:
    async def main() -> tuple[float, float]:
        before = now()
        await asyncio.sleep(2.5)
        return before, now()

    assert run_virtual(main(), start=100.0) == (100.0, 102.5)
    with pytest.raises(ValueError):
        VirtualEventLoop(start=float("nan"))


def test_concurrent_sleepers_wake_in_deadline_order_at_their_deadlines() -> None:
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        woke.append((name, now()))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            for name, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:
                tg.create_task(sleeper(name, delay))

    run_virtual(main())
    assert woke == [("a", 1.0), ("a2", 1.0), ("b", 2.0), ("c", 3.0)]


def test_equal_deadlines_fire_in_scheduling_order() -> None:
    # asyncio's heap alone does not keep equal deadlines first-in first-out; the loop must.
    order: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(200):
            loop.call_at(5.0, order.append, i)
        await asyncio.sleep(6)

    run_virtual(main())
    assert order == list(range(200))


def test_float_error_does_not_stall_the_clock() -> None:
    async def main() -> list[float]:
        for _ in range(10_000):
            await asyncio.sleep(0.1)
        seen = [now()]
        await asyncio.sleep(1e-9)
        seen.append(now())
        await asyncio.sleep(1e9)  # more than asyncio's one-day select cap: one jump
        seen.append(now())
        await asyncio.sleep(1e-9)  # below one ulp at 1e9: must still fire, not spin
        seen.append(now())
        return seen

    t1000, tiny, huge, tiny_at_huge = run_virtual(main())
    assert t1000 == pytest.approx(1000.0, abs=1e-6)
    assert tiny == pytest.approx(t1000 + 1e-9, abs=1e-12)
    assert huge == pytest.approx(1e9 + 1000.0)
    assert tiny_at_huge >= huge


def test_late_start_times_still_fire_timers_due_now() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        loop.call_at(loop.time(), fired.set)
        await fired.wait()
        await asyncio.sleep(1e-9)
        return now()

    assert run_virtual(main(), start=1.7e9) >= 1.7e9


def test_select_never_makes_a_real_syscall() -> None:
    calls: list[float | None] = []
    loop = VirtualEventLoop()
    real = loop._selector._real  # type: ignore[attr-defined]  # white-box: count the real polls
    original = real.select
    real.select = lambda timeout=None: calls.append(timeout) or original(timeout)
    try:
        async def main() -> None:
            for _ in range(100):
                await asyncio.sleep(1.0)

        loop.run_until_complete(main())
        assert loop.time() == 100.0
    finally:
        loop.close()
    assert calls == []


# --- asyncio primitives, unchanged ------------------------------------------------------------

def test_timeout_and_wait_for_fire_at_the_right_virtual_time() -> None:
    async def main() -> tuple[float, float]:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5.0):
                await asyncio.sleep(10.0)
        first = now()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), timeout=2.0)
        return first, now()

    assert run_virtual(main()) == (5.0, 7.0)


def test_taskgroup_failure_cancels_siblings_at_that_instant() -> None:
    cancelled_at: list[float] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(100.0)
        except asyncio.CancelledError:
            cancelled_at.append(now())
            raise

    async def failing() -> None:
        await asyncio.sleep(2.0)
        raise ValueError("boom")

    async def main() -> float:
        with pytest.raises(ExceptionGroup) as caught:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(slow())
                tg.create_task(slow())
                tg.create_task(failing())
        assert [type(exc) for exc in caught.value.exceptions] == [ValueError]
        return now()

    assert run_virtual(main()) == 2.0
    assert cancelled_at == [2.0, 2.0]


def test_queue_semaphore_event_and_async_generators_simulate_a_server() -> None:
    async def ticks(n: int, period: float) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(period)
            yield i

    async def main() -> tuple[list[tuple[int, float]], float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        gpu = asyncio.Semaphore(2)  # two requests served at a time, 3 s each
        done: list[tuple[int, float]] = []
        all_in = asyncio.Event()

        async def serve(item: int) -> None:
            async with gpu:
                await asyncio.sleep(3.0)
            done.append((item, now()))

        async def dispatcher(tg: asyncio.TaskGroup) -> None:
            for _ in range(4):
                tg.create_task(serve(await queue.get()))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatcher(tg))
            async for i in ticks(4, 1.0):  # arrivals at t = 1, 2, 3, 4
                queue.put_nowait(i)
            all_in.set()
            await all_in.wait()
        return done, now()

    done, end = run_virtual(main())
    assert done == [(0, 4.0), (1, 5.0), (2, 7.0), (3, 8.0)]
    assert end == 8.0


# --- refusals ---------------------------------------------------------------------------------

def test_to_thread_and_run_in_executor_are_refused_in_the_awaiting_task() -> None:
    async def main() -> None:
        with pytest.raises(VirtualClockError, match="threads are not allowed"):
            await asyncio.to_thread(time.sleep, 0.01)
        with pytest.raises(VirtualClockError, match="thread's time would be real"):
            await asyncio.get_running_loop().run_in_executor(None, print)

    run_virtual(main())


def test_real_network_and_processes_are_refused_by_name() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(VirtualClockError, match="create_connection"):
            await asyncio.open_connection("127.0.0.1", 9)
        with pytest.raises(VirtualClockError, match="create_server"):
            await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        with pytest.raises(VirtualClockError, match="getaddrinfo"):
            await loop.getaddrinfo("localhost", 80)
        with pytest.raises(VirtualClockError, match="subprocess_exec"):
            await asyncio.create_subprocess_exec("true")
        with pytest.raises(VirtualClockError, match="create_datagram_endpoint"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        a, b = socket.socketpair()
        try:
            with pytest.raises(VirtualClockError, match="sock_recv"):
                await loop.sock_recv(a, 1)
            with pytest.raises(VirtualClockError, match="add_reader"):
                loop.add_reader(a, print)
            with pytest.raises(VirtualClockError, match="add_writer"):
                loop.add_writer(b.fileno(), print)
        finally:
            a.close()
            b.close()

    run_virtual(main())


def test_a_foreign_thread_touching_the_loop_is_an_error_in_both_threads() -> None:
    errors: list[BaseException] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def poke() -> None:
            try:
                loop.call_soon_threadsafe(print)
            except VirtualClockError as exc:
                errors.append(exc)

        thread = threading.Thread(target=poke)
        thread.start()
        thread.join()  # blocking the loop on purpose: the thread's call is in by now
        await asyncio.sleep(1.0)

    with pytest.raises(VirtualClockError, match="another thread"):
        run_virtual(main())
    assert len(errors) == 1


def test_deadlock_raises_and_names_the_waiting_task() -> None:
    async def stuck_forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stuck_forever(), name="the-stuck-one")
            await asyncio.sleep(5.0)

    wall = time.perf_counter()
    with pytest.raises(VirtualClockError, match="deadlock at virtual time 5.0") as caught:
        run_virtual(main())
    assert "the-stuck-one" in str(caught.value) and "stuck_forever" in str(caught.value)
    assert time.perf_counter() - wall < 1.0


def test_sleeping_forever_is_a_deadlock_not_a_jump_to_infinity() -> None:
    async def main() -> None:
        await asyncio.sleep(float("inf"))

    with pytest.raises(VirtualClockError, match="infinity"):
        run_virtual(main())


def test_signal_handlers_still_run() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, got.set)
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            while not got.is_set():
                await asyncio.sleep(1.0)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        return now()

    assert run_virtual(main()) < 1000.0


# --- determinism, loop plumbing ---------------------------------------------------------------

def _simulation(seed: int) -> list[tuple[float, str]]:
    async def worker(name: str, trace: list[tuple[float, str]]) -> None:
        rng = asyncio.get_running_loop().random
        for step in range(20):
            await asyncio.sleep(rng.choice([0.5, 1.0, rng.expovariate(1.0)]))
            trace.append((now(), f"{name}.{step}"))

    async def main() -> list[tuple[float, str]]:
        trace: list[tuple[float, str]] = []
        async with asyncio.TaskGroup() as tg:
            for i in range(50):
                tg.create_task(worker(f"w{i}", trace))
        return trace

    return run_virtual(main(), seed=seed)


def test_same_seed_same_trace() -> None:
    first = _simulation(seed=42)
    assert len(first) == 1000
    assert _simulation(seed=42) == first
    assert _simulation(seed=43) != first


def test_leftover_tasks_are_cancelled_oldest_first() -> None:
    cancelled: list[str] = []

    async def lingering(name: str) -> None:
        try:
            await asyncio.sleep(1e6)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def main() -> None:
        for i in range(30):
            asyncio.get_running_loop().create_task(lingering(f"t{i}"))
        await asyncio.sleep(0)

    run_virtual(main())
    assert cancelled == [f"t{i}" for i in range(30)]


def test_runner_with_loop_factory_and_policy() -> None:
    with asyncio.Runner(loop_factory=VirtualEventLoop) as runner:
        runner.run(asyncio.sleep(10.0))
        runner.run(asyncio.sleep(5.0))
        assert runner.get_loop().time() == 15.0

    loop = VirtualEventLoopPolicy().new_event_loop()
    try:
        assert isinstance(loop, VirtualEventLoop)
    finally:
        loop.close()


def test_is_virtual() -> None:
    async def probe() -> bool:
        return is_virtual()

    assert run_virtual(probe()) is True
    assert asyncio.run(probe()) is False
    assert is_virtual() is False


def test_run_virtual_checks_its_argument_and_supports_debug() -> None:
    with pytest.raises(ValueError, match="coroutine"):
        run_virtual(asyncio.sleep)  # type: ignore[arg-type]  # the mistake under test

    async def main() -> float:
        await asyncio.sleep(1.0)
        return now()

    assert run_virtual(main(), debug=True) == 1.0


def test_a_hundred_thousand_sleeps_complete() -> None:
    async def sleeper(period: float) -> None:
        for _ in range(1_000):
            await asyncio.sleep(period)

    async def main() -> float:
        async with asyncio.TaskGroup() as tg:
            for i in range(100):
                tg.create_task(sleeper(0.001 * (i % 10 + 1)))
        return now()

    assert run_virtual(main()) == pytest.approx(10.0)


def test_a_dropped_async_generator_is_still_closed_in_a_task() -> None:
    """An async generator left unfinished and dropped is closed by the loop (its finally runs,
    and may await), as asyncio does, though without waking the selector through its pipe."""
    closed: list[float] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(1.0)
            closed.append(asyncio.get_running_loop().time())

    async def main() -> None:
        gen = numbers()
        assert await anext(gen) == 1
        del gen  # dropped mid-way: the loop's finalizer hook takes over
        await asyncio.sleep(5.0)

    run_virtual(main())
    assert closed == [1.0]


def test_a_failing_callback_is_reported_as_asyncio_reports_it() -> None:
    # the virtual loop runs ready callbacks itself: an exception goes to the loop's exception
    # handler with the context asyncio's Handle._run gives (message, exception, handle), and the
    # loop carries on
    def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    async def main() -> list[tuple[str, object, bool]]:
        loop = asyncio.get_running_loop()
        seen: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        handles = [loop.call_soon(boom, 1), loop.call_later(0.5, boom, 2)]
        await asyncio.sleep(1.0)
        return [(str(c["message"]), repr(c["exception"]), c["handle"] is h)
                for c, h in zip(seen, handles, strict=True)]

    real = asyncio.run(main())
    assert run_virtual(main()) == real
    assert real[0][0].startswith("Exception in callback ") and real[0][1] == "ValueError('boom 1')"
