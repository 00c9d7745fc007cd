"""Service-time prediction: profile, batch effects, online correction, output lengths, prefixes."""

from __future__ import annotations

import doctest
import math
import random

import pytest

import fleetcall.router.predict as predict_module
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import single_request_latency
from fleetcall.router.predict import (
    UNKNOWN_PRIOR,
    OutputLengths,
    Prediction,
    PrefixIndex,
    Prior,
    ServicePredictor,
)

SHAPES = [(300, 5), (700, 45), (1100, 100), (6000, 80), (12000, 680)]  # HEXGEN-like steps


def test_doctests() -> None:
    assert doctest.testmod(predict_module).failed == 0


def test_base_is_the_roofline_of_a_lone_request() -> None:
    p = ServicePredictor("A100", "llama-3.1-70b", tp=4)
    lone = single_request_latency("A100", "llama-3.1-70b", 2000, 50, tp=4)
    got = p.predict(2000, 50)
    assert isinstance(got, Prediction)
    assert got.ttft_s == pytest.approx(lone.ttft_s)
    assert got.tpot_s == pytest.approx(lone.tpot_s)
    assert got.total_s == pytest.approx(got.ttft_s + 49 * got.tpot_s)
    assert p.profiled and p.samples == 0


def test_batch_slows_decoding_and_cache_speeds_prefill() -> None:
    p = ServicePredictor("A6000", "llama-3.1-8b")
    tpots = [p.predict(1000, 100, batch=b).tpot_s for b in (1, 4, 16, 64)]
    assert tpots == sorted(tpots) and tpots[-1] > 1.5 * tpots[0]
    assert p.predict(1000, 100, batch=64).ttft_s == p.predict(1000, 100).ttft_s
    assert p.predict(4000, 10, cached_tokens=3500).ttft_s < 0.5 * p.predict(4000, 10).ttft_s


def _feed_truth(p: ServicePredictor, truth: ServicePredictor, n: int, seed: int,
                noise: float = 0.1) -> None:
    """Observations from ``truth``'s profile with multiplicative noise, random shapes/batches."""
    rng = random.Random(seed)
    for _ in range(n):
        prompt, output = rng.choice(SHAPES)
        batch = rng.randint(1, 16)
        real = truth.predict(prompt, output, batch=batch)
        p.observe(prompt, output, ttft_s=real.ttft_s * math.exp(rng.gauss(0, noise)),
                  tpot_s=real.tpot_s * math.exp(rng.gauss(0, noise)), batch=batch)


def test_wrong_profile_converges_to_a_truth_twice_as_slow() -> None:
    p = ServicePredictor("L40S", "llama-3.1-70b", tp=4)
    truth = ServicePredictor("L40S", "llama-3.1-70b", tp=4)
    truth._log_ttft = truth._log_tpot = math.log(2.0)  # the real endpoint: 2x the profile
    assert p.predict(1100, 100).total_s == pytest.approx(truth.predict(1100, 100).total_s / 2)
    _feed_truth(p, truth, n=60, seed=1)
    for prompt, output in SHAPES:
        for batch in (1, 8):
            want = truth.predict(prompt, output, batch=batch).total_s
            assert p.predict(prompt, output, batch=batch).total_s == pytest.approx(want, rel=0.1)


def test_ttft_and_tpot_are_corrected_separately() -> None:
    p = ServicePredictor("A100", "llama-3.1-8b")
    for _ in range(40):
        base = p.base(1000, 100, batch=2)
        p.observe(1000, 100, ttft_s=3 * base.ttft_s, tpot_s=0.5 * base.tpot_s, batch=2)
    assert p.ttft_ratio == pytest.approx(3.0, rel=0.02)
    assert p.tpot_ratio == pytest.approx(0.5, rel=0.02)


def test_unknown_gpu_learns_its_speed_from_observations() -> None:
    for gpu in (None, "unknown", "UNKNOWN"):
        p = ServicePredictor(gpu, "llama-3.1-8b")
        assert not p.profiled
        assert p.predict(1000, 100) == UNKNOWN_PRIOR.latency(1000, 100, 0, 1)
    p = ServicePredictor("unknown", None)
    truth = ServicePredictor("A100", "llama-3.1-8b")  # it is really a fast GPU
    prior = p.predict(1000, 100).total_s
    assert prior > 2 * truth.predict(1000, 100).total_s  # conservative: pessimistic prior
    rng = random.Random(3)
    for _ in range(40):
        prompt, output = rng.randint(900, 1300), rng.randint(80, 120)
        real = truth.predict(prompt, output)
        p.observe(prompt, output, ttft_s=real.ttft_s, tpot_s=real.tpot_s)
    assert p.predict(1000, 100).total_s == pytest.approx(truth.predict(1000, 100).total_s,
                                                         rel=0.1)


def test_an_outlier_moves_the_estimate_by_a_bounded_factor() -> None:
    p = ServicePredictor("A100", "llama-3.1-8b", weight=0.2, max_step=4.0)
    before = p.predict(1000, 100).total_s
    base = p.base(1000, 100)
    p.observe(1000, 100, ttft_s=100 * base.ttft_s, tpot_s=100 * base.tpot_s)  # a stalled call
    after = p.predict(1000, 100).total_s
    assert 1.0 < after / before <= 4.0 ** (1 / 4) + 1e-9  # first sample weighs 1/(1+3)
    for _ in range(30):
        p.observe(1000, 100, ttft_s=base.ttft_s, tpot_s=base.tpot_s)
    assert p.predict(1000, 100).total_s == pytest.approx(before, rel=0.01)


def test_unusable_measurements_are_ignored() -> None:
    p = ServicePredictor("A100", "llama-3.1-8b")
    p.observe(1000, 1, ttft_s=0.5, tpot_s=0.0)  # one output token: no TPOT to learn
    assert p.samples == 1 and p.tpot_ratio == 1.0
    p.observe(1000, 50, ttft_s=math.nan, tpot_s=-1.0)
    p.observe(1000, 50, ttft_s=math.inf, tpot_s=0.0)
    assert p.samples == 1 and p.tpot_ratio == 1.0


def test_cached_tokens_are_accounted_when_learning() -> None:
    p = ServicePredictor("A100", "llama-3.1-8b")
    for _ in range(10):  # measured exactly as predicted for a cache hit: nothing to correct
        hit = p.base(8000, 20, cached_tokens=7000)
        p.observe(8000, 20, ttft_s=hit.ttft_s, tpot_s=hit.tpot_s, cached_tokens=7000)
    assert p.ttft_ratio == pytest.approx(1.0)


def test_bad_configuration_raises() -> None:
    with pytest.raises(ConfigError, match="unknown GPU"):
        ServicePredictor("A1000", "llama-3.1-8b")
    with pytest.raises(ConfigError, match="unknown model"):
        ServicePredictor("A100", "llama-9")
    with pytest.raises(ValueError):
        ServicePredictor("A100", "llama-3.1-8b", weight=0.0)
    with pytest.raises(ValueError):
        ServicePredictor("A100", "llama-3.1-8b", max_step=1.0)


def test_prior_is_documented_and_adjustable() -> None:
    slow = Prior(request_overhead_s=0.0, prefill_tokens_per_s=100.0, tpot_s=0.1)
    p = ServicePredictor(None, None, prior=slow)
    assert p.predict(1000, 11) == pytest.approx(Prediction(10.0, 0.1, 11.0))
    assert p.predict(1000, 11, cached_tokens=900).ttft_s == pytest.approx(1.0)


def test_output_lengths_average_per_kind() -> None:
    lengths = OutputLengths(default=300, weight=0.5)
    assert lengths.expect("planner") == 300
    lengths.observe("planner", 100)
    lengths.observe("planner", 200)
    assert lengths.expect("planner") == 150  # plain mean of the first 1/weight samples
    lengths.observe("planner", 350)  # then EWMA: 150 + 0.5 * 200
    assert lengths.expect("planner") == 250
    assert lengths.expect("joiner") == 300
    lengths.observe("joiner", 0)
    assert lengths.expect("joiner") == 1  # never below one token
    assert lengths.kinds() == {"planner": 250, "joiner": 1}
    with pytest.raises(ValueError):
        OutputLengths(default=0)


def test_prefix_index_matches_leading_blocks() -> None:
    index = PrefixIndex(capacity_blocks=100)
    index.add([1, 2, 3, 4])
    assert index.match([1, 2, 3, 4, 5]) == 4
    assert index.match([1, 2, 9, 4]) == 2
    assert index.match([2, 3]) == 2  # chained hashes: block 2 present means its prefix was
    assert index.match([9, 1]) == 0
    assert index.match([]) == 0
    assert len(index) == 4 and 3 in index and 9 not in index


def test_prefix_index_evicts_tails_first_and_lru() -> None:
    index = PrefixIndex(capacity_blocks=6)
    index.add([1, 2, 3, 4])         # a system prompt (1, 2) and a tail (3, 4)
    index.add([1, 2, 5, 6, 7])      # same system prompt, new tail: 3 and 4 go, oldest tail first
    assert len(index) == 6
    assert index.match([1, 2, 5, 6, 7]) == 5
    assert 4 not in index and 3 in index
    index.match([3])                # matching does not refresh
    index.add([8])
    assert 3 not in index and index.match([1, 2]) == 2
    index.clear()
    assert len(index) == 0 and index.match([1]) == 0
    with pytest.raises(ValueError):
        PrefixIndex(0)


def test_an_unmeasured_twin_adopts_a_measured_ones_ratios_until_it_has_its_own() -> None:
    measured, cold = ServicePredictor("unknown", None), ServicePredictor("unknown", None)
    truth = ServicePredictor("A100", "llama-3.1-8b").predict(1000, 100)
    measured.observe(1000, 100, ttft_s=truth.ttft_s, tpot_s=truth.tpot_s)
    cold.adopt(measured)
    assert cold.predict(1000, 100) == measured.predict(1000, 100)
    assert cold.samples == 0
    slower = ServicePredictor("A100", "llama-3.1-8b").predict(1000, 100)
    cold.observe(1000, 100, ttft_s=2 * slower.ttft_s, tpot_s=2 * slower.tpot_s)
    cold.adopt(measured)  # it has its own measurement now: nothing to adopt
    assert cold.predict(1000, 100).total_s == pytest.approx(2 * truth.total_s, rel=1e-6)


def test_the_first_measurement_replaces_the_unknown_prior_whole() -> None:
    """No estimate to protect yet: a first sample 10x faster than the prior is taken as is
    (a clamped step would leave the endpoint looking slower than measured twins)."""
    p = ServicePredictor("unknown", None)
    prior = p.base(1000, 100)
    p.observe(1000, 100, ttft_s=prior.ttft_s / 10, tpot_s=prior.tpot_s / 10)
    assert p.predict(1000, 100).total_s == pytest.approx(prior.total_s / 10, rel=1e-6)
    p.observe(1000, 100, ttft_s=prior.ttft_s * 10, tpot_s=prior.tpot_s * 10)  # now clamped
    assert p.ttft_ratio == pytest.approx(0.1 * 4.0 ** 0.5)  # weight 1/2, clamped to 4x
