"""Trace loaders and prompt text: the packaged data, stage grouping, errors, prefix sharing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fleetcall.bench.workloads import (
    BLOCK_TOKENS, BUILTIN_TRACES, CallSpec, QuerySpec, call_text, data_file,
    load_agent_sessions, load_hexgen_trace, load_mooncake, load_requests_csv,
    load_workload, repeat_queries, to_messages,
)
from fleetcall.errors import ConfigError, WorkloadError
from fleetcall.llm.base import count_tokens
from fleetcall.sim import filler
from fleetcall.router.prefix import block_hashes, prompt_text
from fleetcall.sim.filler import blocks_text, filler_text


def _hexgen(tmp_path: Path, data: object, name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _call(step: str, i: int = 10, o: int = 5) -> dict[str, object]:
    return {"step": step, "input_length": i, "output_length": o}


def test_every_builtin_trace_is_packaged_and_loads() -> None:
    for name in BUILTIN_TRACES:
        assert data_file(name).is_file()
        assert load_workload(name)


def test_trace1_has_90_queries_with_the_papers_parallel_stages() -> None:
    queries = load_hexgen_trace("trace1")
    assert len(queries) == 90
    assert sum(q.n_calls for q in queries) == 1732
    assert queries[0].query_id == "trace1-0"
    parallel = [s for q in queries for s in q.stages if len(s) > 1]
    assert parallel and {s[0].step for s in parallel} <= {"generate_candidate_llama-agent",
                                                          "evaluate"}
    assert len(load_hexgen_trace("trace2")) == 96


def test_consecutive_parallel_steps_group_others_stay_alone(tmp_path: Path) -> None:
    path = _hexgen(tmp_path, [{"Text2SQLRequest": [
        _call("Information Retriever"), _call("Information Retriever"),
        _call("generate_candidate_llama-agent", 100), _call("generate_candidate_llama-agent", 200),
        _call("revise"), _call("generate_candidate_llama-agent", 300),
        _call("evaluate"), _call("evaluate"), _call("evaluate"), _call("unit_tester")]}])
    [query] = load_hexgen_trace(path)
    assert [[c.step[:4] for c in s] for s in query.stages] == [
        ["Info"], ["Info"], ["gene", "gene"], ["revi"], ["gene"], ["eval"] * 3, ["unit"]]
    assert [c.prompt_tokens for c in query.stages[2]] == [100, 200]
    assert query.n_calls == 10 and len(query.calls) == 10
    assert query.arrival_s is None and query.tenant == "default"


@pytest.mark.parametrize("data, expected", [
    ("[{", "not valid JSON"),
    ({"Text2SQLRequest": []}, "non-empty JSON list"),
    ([{"Text2SQLRequest": [_call("a")]}, {"Requests": []}], "query 1"),
    ([{"Text2SQLRequest": [_call("a"), _call("b", -3)]}], "query 0, call 1: 'input_length'"),
    ([{"Text2SQLRequest": [{"step": "", "input_length": 1, "output_length": 1}]}], "'step'"),
    ([{"Text2SQLRequest": [{"step": "a", "input_length": "x", "output_length": 1}]}],
     "input_length"),
])
def test_malformed_hexgen_file_names_file_and_entry(tmp_path: Path, data: object,
                                                    expected: str) -> None:
    path = _hexgen(tmp_path, data, "bad.json")
    with pytest.raises(WorkloadError, match=expected) as info:
        load_hexgen_trace(path)
    assert "bad.json" in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_missing_file_and_unknown_kind_are_clear(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="no such file"):
        load_workload(tmp_path / "nope.json")
    other = tmp_path / "w.yaml"
    other.write_text("x")
    with pytest.raises(WorkloadError, match="unknown workload"):
        load_workload(other)


def test_mooncake_queries_carry_arrivals_and_block_ids() -> None:
    queries = load_mooncake("mooncake")
    assert len(queries) == 12031
    first = queries[0]
    [[call]] = first.stages
    assert first.arrival_s == 0.0 and call.prompt_tokens == 6758 and call.output_tokens == 500
    assert call.prefix_ids == tuple(range(14))
    assert queries[-1].arrival_s == pytest.approx(3536.999)


def test_mooncake_shared_leading_ids_share_prompt_blocks(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    rows = [{"timestamp": 0, "input_length": 1500, "output_length": 3, "hash_ids": [7, 8, 9]},
            {"timestamp": 2000, "input_length": 1100, "output_length": 3, "hash_ids": [7, 8, 5]},
            {"timestamp": 2500, "input_length": 1100, "output_length": 3, "hash_ids": [1, 8, 5]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b, c = load_mooncake(path)
    assert b.arrival_s == 2.0
    ta, tb, tc = (prompt_text(to_messages(q.calls[0], q.query_id, 0)) for q in (a, b, c))
    assert [count_tokens(t) for t in (ta, tb, tc)] == [1500, 1100, 1100]
    ha, hb, hc = block_hashes(ta), block_hashes(tb), block_hashes(tc)
    per_block = BLOCK_TOKENS // 16
    assert ha[:2 * per_block] == hb[:2 * per_block]      # ids 7, 8 shared
    assert ha[2 * per_block] != hb[2 * per_block]        # 9 vs 5
    assert ha[0] != hc[0]                                 # different first id: nothing shared


def test_a_partial_last_block_is_the_start_of_its_full_block() -> None:
    full = call_text(CallSpec("s", 1024, 1, (3, 4)), "q/0")
    part = call_text(CallSpec("s", 700, 1, (3, 4)), "r/5")
    assert count_tokens(part) == 700 and full.startswith(part)


def test_malformed_mooncake_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1, 2]}\n'
                    '{"timestamp": 1, "input_length": 100, "output_length": 1, "hash_ids": [1, 2]}\n')
    with pytest.raises(WorkloadError, match=r"m.jsonl: line 2: 2 hash_ids"):
        load_mooncake(path)


def test_sessions_resend_a_growing_context_matching_the_trace() -> None:
    sessions = load_agent_sessions("miniswe")
    assert len(sessions) == 20 and sum(s.n_calls for s in sessions) == 402
    for session in sessions:
        assert all(len(stage) == 1 for stage in session.stages)
        calls = session.calls
        for prev, call in zip(calls, calls[1:]):
            common = 0
            while (common < min(len(prev.prefix_ids), len(call.prefix_ids))
                   and prev.prefix_ids[common] == call.prefix_ids[common]):
                common += 1
            assert common == min(call.shared_tokens // BLOCK_TOKENS, len(prev.prefix_ids))
            assert len(call.prefix_ids) == call.prompt_tokens // BLOCK_TOKENS
    ids = [set(c.prefix_ids) for s in sessions for c in s.calls[:1]]
    assert not set.intersection(*ids)  # sessions never share blocks


def test_session_prefix_sharing_is_real_in_the_text(tmp_path: Path) -> None:
    path = tmp_path / "s_calls.csv"
    path.write_text("timestamp_s,session_id,call_idx,input_tokens,output_tokens,"
                    "shared_prefix_tokens_with_prev_call\n"
                    "5.0,A,1,1300,10,1200\n"
                    "3.0,A,0,1200,10,0\n"
                    "4.0,B,0,0,7,0\n")
    a, b = load_workload(path)
    assert a.query_id == "s_calls-A" and a.arrival_s == 3.0
    first, second = a.calls
    assert (first.prompt_tokens, second.prompt_tokens, second.shared_tokens) == (1200, 1300, 1200)
    t1, t2 = (call_text(c, f"A/{i}") for i, c in enumerate(a.calls))
    assert t2.startswith(t1[:2 * BLOCK_TOKENS * 4]) and not t2.startswith(t1)
    assert b.calls[0].prompt_tokens == 1  # a zero length is replayed as one token


def test_magagent_and_azure_load() -> None:
    assert len(load_workload("magagent")) == 25
    requests = load_requests_csv("azure-conv")
    assert len(requests) == 19366 and requests[1].arrival_s == pytest.approx(4.314579)
    assert requests[1].calls[0].prefix_ids == ()


def test_bad_csv_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "x_calls.csv"
    path.write_text("timestamp_s,session_id,call_idx,input_tokens,output_tokens,"
                    "shared_prefix_tokens_with_prev_call\n0,A,0,10,5,0\n1,A,1,ten,5,0\n")
    with pytest.raises(WorkloadError, match=r"x_calls.csv: line 3: 'input_tokens'"):
        load_agent_sessions(path)
    path.write_text("timestamp_s,input_tokens\n0,1\n")
    with pytest.raises(WorkloadError, match="missing column.*output_tokens"):
        load_requests_csv(path)


def test_unrelated_calls_never_share_a_prefix() -> None:
    call = CallSpec("s", 300, 1)
    texts = {call_text(call, f"q{i}/0") for i in range(20000)}
    heads = {block_hashes(t)[0] for t in texts}
    assert len(heads) == 20000  # filler seeds alone would collide past 17,576
    assert call_text(call, "q1/0") == prompt_text(to_messages(call, "q1", 0))


def _filler_by_words(tokens: int, seed: int) -> str:
    """filler_text's definition, word by word (it is computed as a slice of a cycle)."""
    start = (seed * 7919) % 17576
    return "".join(filler._word(start + i) for i in range(tokens))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40000), st.integers(0, 10**12))
def test_filler_text_is_its_word_by_word_definition(tokens: int, seed: int) -> None:
    assert filler_text(tokens, seed) == _filler_by_words(tokens, seed)


def test_filler_text_across_the_ends_of_its_cycle() -> None:
    # seed 0 starts the cycle of 17,576 words, seed 2 at word 15,838: texts ending just before,
    # at and after the cycle's end, once or more
    for seed in (0, 2):
        start = seed * 7919 % 17576
        for end in (17575, 17576, 17577, 2 * 17576, 2 * 17576 + 1, 3 * 17576 + 5):
            if end >= start:
                assert filler_text(end - start, seed) == _filler_by_words(end - start, seed)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 10**13), max_size=4), st.integers(0, 600), st.integers(0, 99))
def test_blocks_text_is_named_heads_and_filler(ids: list[int], tail: int, seed: int) -> None:
    expected = "".join(f"{h:011d} "[-12:] + _filler_by_words(509, h) for h in ids)
    assert blocks_text(ids, 512, tail, seed) == expected + _filler_by_words(tail, seed)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 12), st.text(max_size=8))
def test_prompt_has_exactly_the_calls_length(tokens: int, blocks: int, key: str) -> None:
    blocks = min(blocks, (tokens + BLOCK_TOKENS - 1) // BLOCK_TOKENS)
    call = CallSpec("s", tokens, 1, tuple(range(blocks)))
    assert count_tokens(call_text(call, key)) == tokens


def test_specs_validate() -> None:
    with pytest.raises(ValueError):
        CallSpec("s", 0, 1)
    with pytest.raises(ValueError):
        CallSpec("s", 512, 1, (1, 2))
    with pytest.raises(ValueError):
        QuerySpec("q", ((),))


def test_repeat_queries_cycles_with_distinct_ids() -> None:
    queries = load_hexgen_trace("trace1")
    out = repeat_queries(queries, 200)
    assert len(out) == 200 and len({q.query_id for q in out}) == 200
    assert out[90].query_id == "trace1-0~1" and out[90].stages == queries[0].stages
