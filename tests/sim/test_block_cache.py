"""The engine's KV block cache and the pool's prefix index against their definitions, one block
at a time: the bulk fast paths must leave every count and the eviction order exactly as the
plain loops would (shared blocks, repeats, evictions included)."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from fleetcall.router.predict import PrefixIndex
from fleetcall.sim.kvcache import BlockCache as _BlockCache


class _Reference:
    """_BlockCache as first written: one dict operation per block."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.private = capacity, 0
        self.refs: dict[int, int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()

    def try_reserve(self, hits: list[int], need: int) -> bool:
        refs, lru = self.refs, self.lru
        free = self.capacity - self.private - len(refs)
        if need > free + len(lru) - sum(1 for h in hits if refs[h] == 0):
            return False
        for h in hits:
            if refs[h] == 0:
                del lru[h]
            refs[h] += 1
        for _ in range(need - free):
            evicted, _ = lru.popitem(last=False)
            del refs[evicted]
        self.private += need
        return True

    def register(self, hashes: list[int]) -> None:
        self.private -= len(hashes)
        for h in hashes:
            count = self.refs.get(h)
            if count == 0:
                del self.lru[h]
            self.refs[h] = 1 if count is None else count + 1

    def release(self, held: list[int], private: int) -> None:
        self.private -= private
        for h in reversed(held):
            self.refs[h] -= 1
            if self.refs[h] == 0:
                self.lru[h] = None


def _prompt(rng: random.Random, families: int) -> list[int]:
    """Block hashes: a shared family prefix of random length, then blocks of its own."""
    family = rng.randrange(families)
    shared = [family * 1000 + i for i in range(rng.randrange(6))]
    own = [rng.randrange(10**6, 10**9) for _ in range(rng.randrange(1, 8))]
    if rng.random() < 0.05 and own:
        own.append(own[0])  # a repeated block: the slow path must handle it
    return shared + own


@pytest.mark.parametrize(("capacity", "families"), [(60, 4), (60, 1)])
def test_block_cache_matches_its_per_block_definition(capacity: int, families: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    compactions = []
    compact = _BlockCache._compact
    monkeypatch.setattr(_BlockCache, "_compact",
                        lambda self: (compactions.append(1), compact(self))[-1])
    if families == 1:  # one shared prefix, hit again and again: stale places pile up
        monkeypatch.setattr(_BlockCache, "STALE_SLACK", 20 - capacity)
    rng = random.Random(3)
    for _ in range(30):
        fast, slow = _BlockCache(capacity), _Reference(capacity)
        running: list[tuple[list[int], int, int]] = []  # (hashes, hits, private)
        for _ in range(400):
            if running and (rng.random() < 0.45 or len(running) > 6):
                hashes, held, private = running.pop(rng.randrange(len(running)))
                for cache in (fast, slow):
                    cache.register(hashes[held:])
                    cache.release(hashes, private - (len(hashes) - held))
            else:
                hashes = _prompt(rng, families)
                hit = 0
                while hit < len(hashes) - 1 and hashes[hit] in slow.refs:
                    hit += 1
                need = len(hashes) - hit + rng.randrange(3)
                ok = slow.try_reserve(hashes[:hit], need)
                assert fast.try_reserve(hashes[:hit], need) is ok
                if ok:
                    running.append((hashes, hit, need))
            assert fast.counts() == slow.refs and fast.eviction_order() == list(slow.lru)
            assert fast.cached == len(slow.lru)
            assert fast.private == slow.private
    if families == 1:
        assert compactions


def _reference_add(blocks: OrderedDict[int, None], capacity: int, hashes: list[int]) -> None:
    for h in reversed(hashes):
        if h in blocks:
            blocks.move_to_end(h)
        else:
            blocks[h] = None
    while len(blocks) > capacity:
        blocks.popitem(last=False)


@pytest.mark.parametrize("slack", [PrefixIndex.STALE_SLACK, -5])
def test_prefix_index_add_matches_its_per_block_definition(slack: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    compactions = []
    compact = PrefixIndex._compact
    monkeypatch.setattr(PrefixIndex, "_compact",
                        lambda self: (compactions.append(1), compact(self))[-1])
    rng = random.Random(5)
    for capacity in (1, 7, 40):
        monkeypatch.setattr(PrefixIndex, "STALE_SLACK", max(slack, -capacity + 1))
        index, reference = PrefixIndex(capacity), OrderedDict[int, None]()
        for _ in range(2000):
            hashes = _prompt(rng, 3)
            index.add(hashes)
            _reference_add(reference, capacity, hashes)
            assert index.order() == list(reference) and len(index) == len(reference)
    assert compactions or slack > 0
