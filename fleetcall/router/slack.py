"""``slack``, the default policy: earliest predicted finish, with prefix-cache affinity, the
delay a prompt imposes on the calls running beside it, and an urgency queue (see
:class:`Slack`). Pure decision code, like every policy (:mod:`fleetcall.router.dispatcher`)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import Field

from fleetcall.router.predict import ServicePredictor
from fleetcall.router.queue import Discipline, LocalQueue, QueueOrder
from fleetcall.router.views import CallId, CallView, EndpointView
from fleetcall.router.cost import cheapest_in_time
from fleetcall.router.placement import (DEFAULT_CHUNK_TOKENS, _Knobs, _Turns, available_endpoints,
                                        cached_tokens, decode_interference_s, expected_batch,
                                        pick_steal, prefill_chunk_s, wait_offset)

class SlackKnobs(_Knobs):
    """Knobs of the slack policy and its urgency queue.

    affinity_max_delay_s: the most a prefix-cache match may cost, seconds of predicted finish
        over the best endpoint's.
    affinity_max_delay_frac: if set, also at most this fraction of the best predicted latency
        (the smaller bound wins).
    affinity_min_tokens: matches shorter than this many cached tokens earn no affinity.
    aging_per_s, demote_hopeless, no_deadline_slack_s: the urgency queue's (see queue.py).
    steal_min_gain_s: a waiting call moves only if it finishes at least this much sooner
        (hysteresis against ping-pong on noisy predictions).
    prefill_slots: prefill chunks (``chunk_tokens`` each) of prompt an endpoint may have in
        prefill at once (sent, no first token yet, its predicted prefill not over; a prompt
        counts its uncached tokens, at most one chunk); the next call waits in the local queue
        even if a slot is free. Prefill is compute-bound and runs one chunk after another, so
        calls sent to an engine early wait inside it in FCFS order anyway; holding them in the
        pool keeps the choice of which prompt runs next with the urgency queue, while decoding
        calls keep batching. Short prompts that share a chunk go together, and a held prompt
        waits at most until the prefill ahead of it is predicted to be over (see
        ``EndpointState.prefill_gate_open``). None: slots only.
    tie_tolerance: predicted finishes within this fraction of the earliest one's latency are
        ties, taken in turn. 0 (exact ties): idle twins tie exactly (twins share a predictor),
        and the prefill load measured at the endpoint last used already sends the next call
        to another; a wider band measurably cost deadlines on trace2.
    externality: weight of the delay a call's prefill imposes on the calls already running
        at an endpoint (its cost there is its own finish + this x that delay, and x the
        seconds it pushes them past their deadlines; 0: its finish alone). 1 counts every
        second of anyone's latency alike, a second past a deadline twice.
    prefer_cheap, cheap_margin: with ``prefer_cheap``, a call with a deadline goes to the
        endpoint where it adds the least to the GPU bill (``cost_per_hour`` x the seconds it
        extends the endpoint's busy period) among those where its predicted latency x
        (1 + ``cheap_margin``) fits its share of the time left to its deadline; see
        :mod:`fleetcall.router.cost`. Off by default: it trades latency within the deadline
        for cost.
    chunk_tokens, interference: a decode step that shares its iteration with another prompt's
        prefill chunk waits for it (a chunk is the endpoint's typical prompt, at most
        ``chunk_tokens``, the engines' chunked-prefill size); a call's predicted decode time grows
        by ``interference`` x :func:`decode_interference_s` at the endpoint's measured prefill
        load (the fraction of recent time a prompt was in prefill there). 0 turns the term off.
    """

    affinity_max_delay_s: float = Field(default=0.5, ge=0.0)
    affinity_max_delay_frac: float | None = Field(default=None, ge=0.0)
    affinity_min_tokens: int = Field(default=128, ge=1)
    aging_per_s: float = Field(default=0.1, ge=0.0)
    demote_hopeless: bool = True
    no_deadline_slack_s: float | None = Field(default=None, ge=0.0)
    steal_min_gain_s: float = Field(default=0.05, ge=0.0)
    prefill_slots: int | None = Field(default=1, ge=1)
    chunk_tokens: int = Field(default=DEFAULT_CHUNK_TOKENS, ge=1)
    interference: float = Field(default=1.0, ge=0.0)
    tie_tolerance: float = Field(default=0.0, ge=0.0)
    externality: float = Field(default=1.0, ge=0.0)  # see the Slack docstring
    prefer_cheap: bool = False
    cheap_margin: float = Field(default=0.5, ge=0.0)



@dataclass(frozen=True, slots=True)
class Placement:
    """The slack policy's prediction for one endpoint (for tests and live views)."""

    endpoint: str
    finish: float        # predicted absolute finish time of the call there
    service_s: float     # its own predicted service time there
    cached_tokens: int   # prompt tokens probably cached there
    cost: float          # what choose() minimises: finish + the delay it imposes on others


@dataclass(slots=True)
class Slack:
    """``slack`` (the default): earliest predicted finish, with prefix-cache affinity.

    For each available endpoint, the call's predicted finish there is ``now`` + the time until
    a slot frees for it + its own service time. The wait simulates the slots: they free as the
    running calls' predicted remainders run out, and each queued call the local queue would
    serve *before* this one (its key, :meth:`Discipline.key`, is not larger) takes the earliest
    free slot for its predicted service. Its own service time counts its cached prefix there
    and the batch it will share (:func:`expected_batch`).

    Cost: the endpoint with the lowest *cost* wins: the call's finish there plus the delay its
    prefill imposes on the calls already running there (``externality`` x, per running call,
    :func:`_held_delay`: the prompt's chunks share their iterations with it, so each of its next
    tokens, as many as it has left or the prompt has chunks, waits a whole chunk -- a long
    prompt costs a call with a few hundred tokens left far more than its remaining seconds),
    plus, for a running call that has a deadline, the seconds this prompt pushes it past that
    deadline (:func:`_deadline_harm`). The finish alone is myopic: on an idle
    cluster it put a query's short call beside its own sibling's long decode on the fastest
    GPU, a second sooner for the short call and seconds later for the stage.

    Affinity: the endpoint with the longest cached prefix (at least ``affinity_min_tokens``)
    wins if its cost is within the allowed delay of the lowest -- keeping a prefix on one
    endpoint saves the next calls that share it too, which the cost alone does not see.

    Cost (``prefer_cheap``): among the endpoints fast enough for the call's share of its
    deadline, the one it adds the least to the GPU bill (:mod:`fleetcall.router.cost`).

    Ties: costs within ``tie_tolerance`` of the lowest (as a fraction of its predicted
    latency) are equal; among them the longest cached prefix wins, then the endpoints take
    turns, so idle twins share the work and every prefix cache warms up.
    """

    knobs: SlackKnobs = field(default_factory=SlackKnobs)
    discipline: Discipline = field(init=False)
    name: str = field(default="slack", init=False)
    queue_order: QueueOrder = field(default="urgency", init=False)
    prefill_slots: int | None = field(default=None, init=False)
    prefill_chunk_tokens: int = field(default=DEFAULT_CHUNK_TOKENS, init=False)

    _turns: _Turns = field(default_factory=_Turns, init=False, repr=False)
    # endpoint name -> what was derived from its latest queue snapshot (see _facts)
    _memo: dict[str, _QueueFacts] = field(default_factory=dict, init=False, repr=False,
                                          compare=False)
    # disciplines found equal to this one (held, so identity stays meaningful; see _is_mine)
    _disciplines: list[Discipline] = field(default_factory=list, init=False, repr=False,
                                           compare=False)
    # predictor -> (prompt, output) -> its base TTFT (see _QueueFacts.base_ttft)
    _shapes: dict[ServicePredictor, dict[tuple[int, int], float]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = self.knobs
        self.prefill_slots = k.prefill_slots
        self.prefill_chunk_tokens = k.chunk_tokens
        self.discipline = Discipline("urgency", k.aging_per_s, k.demote_hopeless,
                                     k.no_deadline_slack_s)

    def choose(self, call: CallView, endpoints: Sequence[EndpointView], now: float) -> str:
        placements = self.placements(call, endpoints, now)
        if self.knobs.prefer_cheap:
            cheap = cheapest_in_time(call, placements, endpoints, now, self.knobs.cheap_margin)
            if cheap is not None:
                return cheap.endpoint
        earliest = min(placements, key=lambda p: (p.cost, -p.cached_tokens))
        rank = self._turns.ranks(placements)
        close = earliest.cost + self.knobs.tie_tolerance * max(earliest.finish - now, 0.0)
        best = min((p for p in placements if p.cost <= close),
                   key=lambda p: (-p.cached_tokens, rank[p.endpoint]))
        sticky = max(placements, key=lambda p: (p.cached_tokens, -p.cost))
        if sticky.cached_tokens >= self.knobs.affinity_min_tokens and sticky is not best:
            if sticky.cost <= best.cost + self._allowed_delay(best, now):
                return sticky.endpoint
        return best.endpoint

    def placements(self, call: CallView, endpoints: Sequence[EndpointView],
                   now: float) -> list[Placement]:
        """The predicted finish of ``call`` on every available endpoint, in their order."""
        usable = available_endpoints(endpoints, call)
        ends = {e.name: _sibling_end(call, e, now) for e in endpoints}
        if max(ends.values(), default=-math.inf) == -math.inf:
            return [self._place(call, e, now) for e in usable]  # none of its query runs
        return [self._place(call, e, now, max((t for n, t in ends.items() if n != e.name),
                                              default=-math.inf))
                for e in usable]

    def new_queue(self) -> LocalQueue:
        return LocalQueue.of(self.discipline)

    def steal(self, idle: EndpointView, others: Sequence[EndpointView],
              now: float) -> tuple[str, CallId] | None:
        return pick_steal(idle, others, now, discipline=self.discipline,
                          min_gain_s=self.knobs.steal_min_gain_s)

    def _place(self, call: CallView, endpoint: EndpointView, now: float,
               siblings_end: float = -math.inf) -> Placement:
        cached = cached_tokens(call, endpoint)
        predictor = endpoint.predictor
        predict = predictor.predict
        own = predict(call.prompt_tokens, call.output_tokens,
                      cached_tokens=cached, batch=expected_batch(endpoint))
        facts = self._facts(endpoint)
        ahead, behind = self._ahead(call, own.total_s, endpoint, now, facts.queries)
        services = endpoint.queued_service_s
        slot_wait = wait_offset(endpoint, services[:len(ahead)] if isinstance(ahead, range)
                                else [services[i] for i in ahead])
        ratio = 0.0
        if self.prefill_slots is not None or behind:
            # each queued call's predict(prompt, output).ttft_s, without a predict() call each
            ratio = predictor.ttft_ratio
            upto = max(ahead[-1] if ahead else -1, behind[-1] if behind else -1) + 1
            base_ttft = facts.base_ttft(predictor, self._known_ttfts(predictor), upto)
        if self.prefill_slots is not None:
            # Prefill is compute-bound and serial: this prompt starts after the prefill still
            # owed to the running calls and to every queued call served before it.
            prefill_wait = endpoint.prefill_backlog_s + sum(
                [base_ttft[i] * ratio for i in ahead])
            start = max(slot_wait, prefill_wait)
        else:
            start = slot_wait
        # Continuous batching runs a prefill chunk in the same iteration as a decode step: while
        # other prompts prefill here, this call's tokens come one per chunk -- as long as the
        # prompts this endpoint computes (``typical_prefill_tokens``), at most the engine's
        # chunk size.
        chunk_s = prefill_chunk_s(predictor, self.knobs.chunk_tokens,
                                  endpoint.typical_prefill_tokens)
        slowed = decode_interference_s(call.output_tokens - 1, own.tpot_s, chunk_s,
                                       endpoint.prefill_load)
        service = own.total_s + slowed * self.knobs.interference
        finish = now + start + service
        if self.knobs.externality <= 0.0:
            return Placement(endpoint.name, finish, service, cached, finish)
        # Its prefill chunks share their iterations with every call running here: each of a
        # running call's next tokens (one an iteration) waits a whole chunk instead of a
        # decode step, for as many tokens as it has left or chunks as the prompt has. Its own
        # query's calls (siblings of a parallel stage) end the stage together: what counts for
        # them is the last one's finish; for the others, the seconds lost.
        chunks = -(-(call.prompt_tokens - cached) // self.knobs.chunk_tokens)
        compute = own.ttft_s - predict(1, 1).ttft_s
        held_s = 0.0  # what each chunk-held token waits beyond its decode step
        if compute > 0.0 and chunks > 0 and own.tpot_s > 0.0:
            held_s = max(compute / chunks - own.tpot_s, 0.0)
        # One pass over the running calls: each one's delay (the placed call's time per token
        # stands for theirs), and for those with a deadline the seconds it pushes them past it,
        # summed apart and added after (a second past a deadline counts twice).
        harm, late, stage_end = 0.0, 0.0, siblings_end
        mine = call.query_id
        siblings = bool(mine) and mine in endpoint.running_queries
        if held_s > 0.0 or siblings:
            running = endpoint.running
            queries = endpoint.running_queries or ("",) * len(running)
            latest = endpoint.running_latest_end or (math.inf,) * len(running)
            for remaining, query, latest_end in zip(running, queries, latest):
                delay = _held_delay(remaining - start, own.tpot_s, held_s, chunks)
                if siblings and query == mine:
                    stage_end = max(stage_end, now + remaining + delay)
                    continue
                harm += delay
                if latest_end < math.inf:
                    late += _deadline_harm(now + remaining, latest_end, delay)
        harm += late
        if behind:
            stage_end = max(stage_end, _queued_sibling_end(
                call, endpoint, behind, [base_ttft[i] * ratio for i in behind],
                now + start + own.ttft_s))
        cost = max(finish, stage_end) + self.knobs.externality * harm
        return Placement(endpoint.name, finish, service, cached, cost)

    def _facts(self, endpoint: EndpointView) -> _QueueFacts:
        """What slack derives from ``endpoint``'s queued calls alone, kept while the view
        shows the same snapshot (the local queue hands out one tuple until it changes): a
        placement looks at every endpoint's queue, most of which did not change since the
        last placement."""
        facts = self._memo.get(endpoint.name)
        if facts is None or facts.queued is not endpoint.queued:
            if len(self._memo) > 256:  # endpoints come and go: forget the ones gone
                self._memo.clear()
            facts = self._memo[endpoint.name] = _QueueFacts(endpoint.queued)
        return facts

    def _is_mine(self, discipline: Discipline) -> bool:
        """``discipline == self.discipline``, remembering the equal ones by identity (every
        local queue holds its own copy; comparing them field by field at every placement, for
        every endpoint, showed in profiles)."""
        for known in self._disciplines:
            if discipline is known:
                return True
        if discipline != self.discipline:
            return False
        if len(self._disciplines) > 256:
            self._disciplines.clear()
        self._disciplines.append(discipline)
        return True

    def _known_ttfts(self, predictor: ServicePredictor) -> dict[tuple[int, int], float]:
        """(prompt, output) -> base TTFT at ``predictor``, as far as computed (see
        :meth:`_QueueFacts.base_ttft`)."""
        known = self._shapes.get(predictor)
        if known is None:
            if len(self._shapes) > 256:  # predictors come and go with endpoints
                self._shapes.clear()
            known = self._shapes[predictor] = {}
        return known

    def _ahead(self, call: CallView, service_s: float, endpoint: EndpointView, now: float,
               queued_queries: frozenset[str] | None = None
               ) -> tuple[Sequence[int], Sequence[int]]:
        """Positions in ``endpoint.queued`` of the calls served before ``call`` there -- those
        whose key is not larger than its own -- and of those served after it, both in serve
        order (the first a ``range`` when it is a prefix). The second is left empty when no
        call of ``call``'s query is queued there (only its own query's calls behind it are
        looked at, by :func:`_queued_sibling_end`). ``queued_queries``: the queries of the
        queued calls, if known."""
        key, queued, services = self.discipline.key, endpoint.queued, endpoint.queued_service_s
        if not queued:
            return range(0), range(0)
        mine = key(call, service_s, now)
        if queued_queries is None:
            queued_queries = frozenset([q.query_id for q in queued])
        siblings = bool(call.query_id) and call.query_id in queued_queries
        promise = endpoint.queued_order
        if promise is not None and promise[1] == now and self._is_mine(promise[0]):
            # sorted by this very key: the calls ahead are a prefix, found in log time (the
            # same calls as the scan below; a placement looks at every endpoint's queue)
            n = bisect.bisect_right(range(len(queued)), mine,
                                    key=lambda i: key(queued[i], services[i], now))
            return range(n), (range(n, len(queued)) if siblings else range(0))
        ahead, behind = [], []
        for i, (q, s) in enumerate(zip(queued, services)):
            if key(q, s, now) <= mine:
                ahead.append(i)
            elif siblings:
                behind.append(i)
        return ahead, behind

    def _allowed_delay(self, best: Placement, now: float) -> float:
        allowed = self.knobs.affinity_max_delay_s
        if self.knobs.affinity_max_delay_frac is not None:
            allowed = min(allowed, self.knobs.affinity_max_delay_frac * (best.finish - now))
        return allowed


def _held_delay(decoding_s: float, tpot_s: float, held_s: float, chunks: int) -> float:
    """Seconds a prompt of ``chunks`` prefill chunks delays a call running beside it that
    decodes for ``decoding_s`` more seconds after the prompt starts, at ``tpot_s`` a token.

    Continuous batching gives every running call one token per iteration, and an iteration with
    a chunk in it lasts the chunk: each of the call's next ``min(tokens, chunks)`` tokens waits
    ``held_s`` (a chunk's compute less the decode step it replaces). A call with a few hundred
    tokens left next to a prompt of 50 chunks loses 50 chunks' time, however few seconds it had
    left (issue 12: a 100k-token Mooncake prompt joined an A100 where a call had 17 s and about
    600 tokens left; that call went from 32 s to 93 s, into the tail, while an idle L40S would
    have served the prompt 23 s slower and delayed no one).

        >>> _held_delay(10.0, 0.02, 1.0, 5)   # 500 tokens left, 5 chunks: 5 tokens wait
        5.0
        >>> _held_delay(0.04, 0.02, 1.0, 5)   # 2 tokens left: 2 wait
        2.0
        >>> _held_delay(-1.0, 0.02, 1.0, 5)   # it ends before the prompt starts
        0.0
    """
    if decoding_s <= 0.0 or tpot_s <= 0.0:
        return 0.0
    return min(decoding_s / tpot_s, chunks) * held_s


def _deadline_harm(end: float, latest_end: float, delay: float) -> float:
    """Seconds past its deadline that a ``delay`` (:func:`_held_delay`) pushes a running call
    predicted to end at loop time ``end``, which must end by ``latest_end``, beyond what it was
    late anyway. Counted on top of the delay itself: a second past a deadline is a second of
    latency and a missed SLO (issue 12: a 112k-token Mooncake prompt joined an A100 where a call
    had 260 tokens left; that call went from 16 to 92 s, past its 49 s deadline, while an idle
    L40S would have kept both in time). A ``latest_end`` of -inf (a deadline of -inf) is long
    past: every second of delay is a second past it (inf - inf would make the cost NaN).

        >>> _deadline_harm(10.0, 12.0, 5.0), _deadline_harm(10.0, -math.inf, 5.0)
        (3.0, 5.0)
    """
    if latest_end == -math.inf:
        return delay
    return max(end + delay - latest_end, 0.0) - max(end - latest_end, 0.0)


def _queued_sibling_end(call: CallView, endpoint: EndpointView, behind: Sequence[int],
                        ttfts: Sequence[float], prefilled_at: float) -> float:
    """Predicted loop time the last of ``call``'s query's calls in ``behind`` (positions in
    ``endpoint.queued`` of the calls the local queue there serves after ``call``, in serve
    order; ``ttfts``: their predicted times to first token, same order) ends once ``call`` is
    placed there (-inf if none is of its query).

    Prefill is serial: the calls behind ``call`` start their prompts after its prompt is in
    (``prefilled_at``), one after another in serve order. Without this, siblings of one parallel
    stage, each a little more urgent than the last (a slightly longer prompt), each saw only the
    prompt ahead of it and piled onto one GPU: the stage's prompts ran one after another there
    while other GPUs had room (issue 12: trace2 with doubled prompts at an idle rate, +6% p95).
    """
    queued, services = endpoint.queued, endpoint.queued_service_s
    end, t, query = -math.inf, prefilled_at, call.query_id
    for i, ttft in zip(behind, ttfts):
        t += ttft
        if queued[i].query_id == query:
            end = max(end, t + max(services[i] - ttft, 0.0))
    return end


_SHAPES_KEPT = 65_536  # (prompt, output) shapes whose base TTFT slack keeps per predictor


class _QueueFacts:
    """What the slack policy derives from one queue snapshot (a tuple of queued calls, in
    serve order): the queries queued, and each call's base time to first token by predictor
    (no learned ratio: ``predictor.predict(p, o).ttft_s`` is ``base(p, o).ttft_s x
    predictor.ttft_ratio``, which :meth:`ServicePredictor.predict` computes so)."""

    __slots__ = ("queued", "_queries", "_base")

    def __init__(self, queued: tuple[CallView, ...]) -> None:
        self.queued = queued  # the snapshot (held: its identity is the memo's key)
        self._queries: frozenset[str] | None = None
        self._base: tuple[ServicePredictor, list[float]] | None = None

    @property
    def queries(self) -> frozenset[str]:
        if self._queries is None:
            self._queries = frozenset([q.query_id for q in self.queued])
        return self._queries

    def base_ttft(self, predictor: ServicePredictor, known: dict[tuple[int, int], float],
                  upto: int) -> list[float]:
        """The first ``upto`` (at least) queued calls' ``predictor.base(prompt,
        output).ttft_s``, same order (computed as far as asked: a call placed ahead of most of
        a queue looks at its head only); ``known``: (prompt, output) -> that time, for this
        predictor (looked up first, filled in)."""
        if self._base is None or self._base[0] is not predictor:
            self._base = predictor, []
        ttfts = self._base[1]
        if len(ttfts) < upto:
            if len(known) > _SHAPES_KEPT:
                known.clear()
            for q in self.queued[len(ttfts):upto]:
                shape = (q.prompt_tokens, q.output_tokens)
                ttft = known.get(shape)
                if ttft is None:
                    ttft = known[shape] = predictor.base(*shape).ttft_s
                ttfts.append(ttft)
        return ttfts


def _sibling_end(call: CallView, endpoint: EndpointView, now: float) -> float:
    """Predicted loop time the last call of ``call``'s query running at ``endpoint`` ends
    (-inf if none does)."""
    if not call.query_id or call.query_id not in endpoint.running_queries:
        return -math.inf  # (the common case, found without a generator: a hot path)
    return max((now + r for r, q in zip(endpoint.running, endpoint.running_queries)
                if q == call.query_id), default=-math.inf)
