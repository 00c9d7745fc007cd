"""The emulated continuous-batching engine, on the virtual clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from fleetcall.errors import ConfigError, LLMError
from fleetcall.gpumodel import perf
from fleetcall.sim.engine import Engine, TokenEvent, _DecodeLine, _sum_max_lines
from fleetcall.gpumodel.gpus import get_gpu
from fleetcall.gpumodel.models import ModelShape, get_model
from fleetcall.vclock import run_virtual

D8 = perf.Deployment.of("A100", "llama-3.1-8b")


def with_capacity(tokens: int, model: str = "llama-3.1-8b") -> perf.Deployment:
    """A deployment whose KV cache holds exactly ``tokens`` tokens (by its memory budget)."""
    g, m = get_gpu("A100"), get_model(model)
    util = (m.weight_bytes + perf.ACTIVATION_RESERVE_GIB * 2**30
            + (tokens + 0.5) * m.kv_bytes_per_token) / g.memory_bytes
    d = perf.Deployment.of(g, m, gpu_mem_util=util)
    assert d.kv_capacity_tokens() == tokens
    return d


def now() -> float:
    return asyncio.get_running_loop().time()


async def timed(engine: Engine, prompt: int, output: int, hashes: tuple[int, ...] = (),
                stream: bool = False, log: list | None = None) -> tuple[float, float, int]:
    """(ttft, total, cached tokens) of one request, from its submission."""
    start, ttft, cached = now(), -1.0, -1
    async for ev in engine.generate(prompt, output, hashes, stream=stream):
        if log is not None:
            log.append((round(now(), 9), prompt, ev))
        if ev.first:
            ttft, cached = now() - start, ev.cached_tokens
    return ttft, now() - start, cached


# ---- a lone request ------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, output", [(1000, 100), (5000, 300), (3, 2), (300, 1),
                                            (4096, 50)])
def test_a_lone_request_takes_the_single_request_latency(prompt: int, output: int) -> None:
    async def main() -> tuple[float, float, int]:
        async with Engine(D8) as engine:
            return await timed(engine, prompt, output)

    ttft, total, cached = run_virtual(main())
    expected = D8.single_request_latency(prompt, output)
    assert ttft == pytest.approx(expected.ttft_s, rel=1e-9)
    assert total == pytest.approx(expected.total_s, rel=1e-9)
    assert cached == 0


def test_events_of_a_plain_request_are_first_then_done() -> None:
    async def main() -> tuple[list[TokenEvent], list[TokenEvent]]:
        async with Engine(D8) as engine:
            many = [ev async for ev in engine.generate(100, 20)]
            one = [ev async for ev in engine.generate(100, 1)]
            return many, one

    many, one = run_virtual(main())
    assert many == [TokenEvent(1, True, False, 0), TokenEvent(20, False, True, 0)]
    assert one == [TokenEvent(1, True, True, 0)]


def test_the_decode_closed_form_is_the_sum_of_iteration_times() -> None:
    line = _DecodeLine.of(D8)
    for batch, context, k in [(1, 1000, 50), (200, 2000, 300), (64, 40000, 1000), (3, 0, 1)]:
        looped = sum(D8.iteration_time(decode_batch=batch, decode_context_tokens=context + batch * i)
                     for i in range(k))
        assert line.time(batch, context, k) == pytest.approx(looped, rel=1e-9)
        elapsed = looped * 0.37
        j = line.covering(batch, context, k, elapsed)
        assert line.time(batch, context, j) >= elapsed
        assert j == 1 or line.time(batch, context, j - 1) < elapsed


@pytest.mark.parametrize("a1, b1, a2, b2, n", [(0, 1, 5, 0, 10), (5, 0, 0, 1, 10), (1, 2, 1, 2, 7),
                                               (3, -1, 0, 1, 9), (0, 0, 0, 0, 0), (2, 0.5, 9, 0.1, 40)])
def test_sum_of_max_of_two_lines(a1: float, b1: float, a2: float, b2: float, n: int) -> None:
    brute = sum(max(a1 + b1 * i, a2 + b2 * i) for i in range(n))
    assert _sum_max_lines(a1, b1, a2, b2, n) == pytest.approx(brute)


# ---- batching and memory -------------------------------------------------------------------


def test_eight_concurrent_requests_batch() -> None:
    async def main() -> float:
        async with Engine(D8) as engine:
            await asyncio.gather(*(timed(engine, 500, 200) for _ in range(8)))
            return now()

    makespan = run_virtual(main())
    alone = D8.single_request_latency(500, 200).total_s
    assert alone < makespan < 2.5 * alone  # far below 8 * alone


def test_kv_capacity_limits_how_many_requests_run() -> None:
    d = with_capacity(2500)  # two requests of 1000 + 100 tokens fit, a third does not

    async def main() -> tuple[list[tuple[float, float, int]], list[tuple[int, int]]]:
        async with Engine(d) as engine:
            jobs = [asyncio.create_task(timed(engine, 1000, 100)) for _ in range(4)]
            seen = []
            while not all(j.done() for j in jobs):
                s = engine.stats()
                seen.append((s.running, s.waiting))
                assert s.kv_used_tokens <= s.kv_capacity_tokens
                await asyncio.sleep(0.05)
            return [j.result() for j in jobs], seen

    results, seen = run_virtual(main())
    assert max(running for running, _ in seen) == 2
    assert (2, 2) in seen
    first_done = min(total for _, total, _ in results[:2])
    assert all(ttft > first_done for ttft, _, _ in results[2:])  # waited for memory


def test_a_request_larger_than_the_cache_is_refused() -> None:
    async def main() -> None:
        async with Engine(with_capacity(1100)) as engine:
            with pytest.raises(ValueError, match="KV cache"):
                engine.submit(1000, 200)
            with pytest.raises(ValueError):
                engine.submit(0, 10)

    run_virtual(main())


def test_max_batch_bounds_the_running_requests() -> None:
    async def main() -> int:
        async with Engine(D8, max_batch=3) as engine:
            jobs = [asyncio.create_task(timed(engine, 100, 50)) for _ in range(5)]
            await asyncio.sleep(0.1)
            running = engine.stats().running
            await asyncio.gather(*jobs)
            return running

    assert run_virtual(main()) == 3


# ---- prefix cache --------------------------------------------------------------------------


def test_prefix_hits_skip_prefill_and_are_reported() -> None:
    hashes = tuple(range(1000, 1000 + 2000 // 16))

    async def main() -> tuple[tuple, tuple, tuple]:
        async with Engine(D8) as engine:
            cold = await timed(engine, 2000, 10, hashes)
            warm = await timed(engine, 2000, 10, hashes)
            other = await timed(engine, 2000, 10, tuple(h + 10_000 for h in hashes))
            stats = engine.stats()
            assert stats.prompt_tokens == 6000 and stats.cached_prompt_tokens == warm[2]
            return cold, warm, other

    cold, warm, other = run_virtual(main())
    assert cold[2] == 0 and other[2] == 0
    assert warm[2] == (2000 - 1) // 16 * 16  # whole blocks, the last prompt token recomputed
    assert warm[0] == pytest.approx(D8.single_request_latency(2000, 10, cached_tokens=warm[2]).ttft_s)
    assert warm[0] < 0.3 * cold[0]


def test_a_shared_prefix_hits_up_to_where_prompts_differ() -> None:
    a = tuple(range(100))
    b = a[:40] + tuple(range(500, 560))

    async def main() -> int:
        async with Engine(D8) as engine:
            await timed(engine, 1600, 5, a)
            return (await timed(engine, 1600, 5, b))[2]

    assert run_virtual(main()) == 40 * 16


def test_lru_eviction_keeps_the_recently_used_prefix() -> None:
    d = with_capacity(128 * 16)  # 128 blocks
    a, b, big = tuple(range(32)), tuple(range(100, 132)), tuple(range(1000, 1093))

    async def main() -> tuple[int, int, int]:
        async with Engine(d) as engine:
            await timed(engine, 512, 16, a)
            await timed(engine, 512, 16, b)
            touched = (await timed(engine, 512, 16, a))[2]  # a is now more recent than b
            await timed(engine, 1500, 16, big)  # needs 95 blocks: evicts 31 of b's, tail first
            assert engine.stats().kv_cached_tokens == (1 + 32 + 93) * 16
            return touched, (await timed(engine, 512, 16, a))[2], (await timed(engine, 512, 16, b))[2]

    touched, a_again, b_again = run_virtual(main())
    assert touched == a_again == 31 * 16
    assert b_again == 16  # only b's head block survived


# ---- cancellation, arrivals, streaming -------------------------------------------------------


def test_cancelling_a_request_frees_its_slot() -> None:
    d = with_capacity(1200)  # one request of 1000 + 100 at a time

    async def main() -> tuple[float, float, int]:
        async with Engine(d) as engine:
            first = asyncio.create_task(timed(engine, 1000, 100))
            await asyncio.sleep(0.5)
            second = asyncio.create_task(timed(engine, 1000, 100))
            await asyncio.sleep(0.5)
            assert engine.stats().waiting == 1
            first.cancel()
            cancelled_at = now()
            ttft, _, _ = await second
            assert engine.stats().kv_used_tokens == 0
            return cancelled_at, ttft + 0.5, engine.stats().requests_done

    cancelled_at, second_first_token, done = run_virtual(main())
    prefill = D8.single_request_latency(1000, 1).ttft_s
    assert cancelled_at < second_first_token < cancelled_at + prefill + 0.1
    assert done == 1


def test_closing_the_consumer_and_cancelling_early_requests() -> None:
    async def main() -> None:
        async with Engine(D8) as engine:
            gen = engine.generate(500, 1000)
            assert (await anext(gen)).first
            await gen.aclose()
            waiting = engine.submit(100, 10)
            waiting.cancel()  # still in its request overhead
            waiting.cancel()
            assert [ev async for ev in waiting] == []
            await asyncio.sleep(1.0)
            s = engine.stats()
            assert (s.running, s.waiting, s.kv_used_tokens, s.requests_done) == (0, 0, 0, 0)
            assert engine._driver is None  # idle: the driver has exited

    run_virtual(main())


def test_an_arrival_joins_at_the_next_iteration_boundary() -> None:
    async def main() -> tuple[float, float, float]:
        async with Engine(D8) as engine:
            long = asyncio.create_task(timed(engine, 1000, 400))
            await asyncio.sleep(3.0)  # well into long's decode
            ttft, _, _ = await timed(engine, 500, 5)
            _, long_total, _ = await long
            return ttft, long_total, now()

    ttft, long_total, _ = run_virtual(main())
    alone = D8.single_request_latency(500, 5).ttft_s
    step = D8.single_request_latency(1000, 400).tpot_s
    assert alone < ttft < alone + 2 * step  # waited at most for the iteration in progress
    assert long_total > D8.single_request_latency(1000, 400).total_s  # slowed by the newcomer


def test_streamed_requests_get_progress_events() -> None:
    async def main() -> tuple[list[tuple[float, int, TokenEvent]], list[tuple[float, int, TokenEvent]]]:
        streamed: list = []
        plain: list = []
        async with Engine(D8, stream_interval_s=0.1) as engine:
            await asyncio.gather(timed(engine, 800, 200, stream=True, log=streamed),
                                 timed(engine, 801, 200, log=plain))
        return streamed, plain

    streamed, plain = run_virtual(main())
    assert len(plain) == 2
    tokens = [ev.tokens for _, _, ev in streamed]
    assert tokens == sorted(tokens) and tokens[-1] == 200 and streamed[-1][2].done
    gaps = [b[0] - a[0] for a, b in zip(streamed[1:-1], streamed[2:-1])]
    assert len(streamed) > 20 and all(0.099 < g < 0.15 for g in gaps)


def test_stream_interval_zero_reports_every_iteration() -> None:
    async def main() -> list[int]:
        async with Engine(D8, stream_interval_s=0.0) as engine:
            return [ev.tokens async for ev in engine.generate(100, 30, stream=True)]

    assert run_virtual(main()) == list(range(1, 31))


def test_runs_are_deterministic() -> None:
    def run() -> list:
        async def main() -> list:
            log: list = []
            rng = random.Random(5)
            async with Engine(with_capacity(6000), stream_interval_s=0.05) as engine:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(40):
                        await asyncio.sleep(rng.expovariate(5.0))
                        prompt = rng.randint(10, 2000)
                        hashes = tuple(range(rng.randint(0, 3) * 1000, 4000))[:prompt // 16]
                        tg.create_task(timed(engine, prompt, rng.randint(1, 300), hashes,
                                             stream=rng.random() < 0.5, log=log))
            return log

        return run_virtual(main())

    first = run()
    assert first == run() and len(first) > 80


def test_aclose_ends_every_request() -> None:
    async def main() -> None:
        engine = Engine(D8)
        running = asyncio.create_task(timed(engine, 1000, 1000))
        await asyncio.sleep(1.0)
        await engine.aclose()
        with pytest.raises(LLMError, match="closed"):
            await running
        with pytest.raises(LLMError):
            engine.submit(10, 10)
        assert engine._driver is None

    run_virtual(main())


# ---- perf.default_tp -----------------------------------------------------------------------


@pytest.mark.parametrize("gpu", ["A100-80G", "A6000", "L40S"])
def test_default_tp_of_llama_70b_is_4(gpu: str) -> None:
    assert perf.default_tp(gpu, "llama-3.1-70b") == 4


def test_default_tp_picks_1_when_a_model_fits_and_refuses_giants() -> None:
    assert perf.default_tp("A100", "llama-3.1-8b") == 1
    assert perf.default_tp("L4", "llama-3.1-70b") == 8
    giant = ModelShape("giant", params_b=900, layers=120, hidden=16384, heads=128, kv_heads=8,
                       head_dim=128, vocab=128256)
    with pytest.raises(ConfigError, match="giant"):
        perf.default_tp("A100", giant)


# ---- speed -------------------------------------------------------------------------------------


async def _mixed_load(engine: Engine) -> list[tuple[float, float, int]]:
    """Overlapping requests (prefill chunks, decode stretches cut by arrivals, streams),
    arriving at the same engine times whatever the engine's speed."""
    async def later(delay: float, prompt: int, output: int, stream: bool) -> tuple[float, float, int]:
        await asyncio.sleep(delay / engine.speed)
        return await timed(engine, prompt, output, stream=stream)

    return list(await asyncio.gather(later(0.0, 3000, 200, True), later(0.05, 9000, 40, False),
                                     later(0.3, 500, 500, True), later(1.1, 20, 1, False)))


@pytest.mark.parametrize("speed", [4.0, 2.5, 0.25, 37.5, 1000.0])
def test_at_speed_k_requests_take_1_over_k_of_the_loop_time_and_report_the_same(speed: float) -> None:
    """``fleetcall emulate --speed K``: every duration / K on the loop's clock; the engine's own
    figures (its clock, busy seconds, iterations, tokens) are those of speed 1."""
    def measure(k: float) -> tuple[list[tuple[float, float, int]], float, object, float]:
        async def main() -> tuple[list[tuple[float, float, int]], float, object, float]:
            async with Engine(D8, speed=k, stream_interval_s=0.1) as engine:
                timings = await _mixed_load(engine)  # loop seconds
                return timings, now(), engine.stats(), engine.now()
        return run_virtual(main())

    base, base_end, base_stats, base_clock = measure(1.0)
    fast, fast_end, fast_stats, fast_clock = measure(speed)
    for (t1, total1, cached1), (tk, totalk, cachedk) in zip(base, fast):
        assert tk == pytest.approx(t1 / speed, rel=1e-9)
        assert totalk == pytest.approx(total1 / speed, rel=1e-9)
        assert cachedk == cached1
    assert fast_end == pytest.approx(base_end / speed, rel=1e-9)
    assert fast_clock == pytest.approx(base_clock, rel=1e-9)       # engine seconds
    assert fast_stats.busy_s == pytest.approx(base_stats.busy_s, rel=1e-9)
    assert (fast_stats.iterations, fast_stats.requests_done) == (base_stats.iterations,
                                                                 base_stats.requests_done)


@pytest.mark.parametrize("speed", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_a_speed_that_is_not_a_positive_number_is_refused(speed: object) -> None:
    with pytest.raises(ValueError, match="speed must be a finite number > 0"):
        Engine(D8, speed=speed)  # type: ignore[arg-type]


def test_reset_prefix_cache_forgets_cached_blocks_only() -> None:
    hashes = tuple(range(100, 164))

    async def main() -> tuple[int, int, int, int]:
        async with Engine(D8) as engine:
            await timed(engine, 1024, 4, hashes)
            _, _, warm = await timed(engine, 1024, 4, hashes)
            dropped = engine.reset_prefix_cache()
            _, _, cold = await timed(engine, 1024, 4, hashes)
            return warm, dropped, cold, engine.stats().kv_cached_tokens

    warm, dropped, cold, cached_after = run_virtual(main())
    assert warm == 1008 and dropped == 1024 and cold == 0 and cached_after == 1024
