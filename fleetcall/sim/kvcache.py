"""KV memory of the emulated engine in blocks: private blocks of running requests plus cached
prefix blocks named by their chained hashes (:mod:`fleetcall.router.prefix`), evicted least
recently used first. See :class:`~fleetcall.sim.engine.Engine` for how the engine uses it."""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Sequence
from itertools import repeat

from fleetcall.router.prefix import compacted, live_blocks

__all__ = ["BlockCache"]


class BlockCache:
    """KV memory in blocks: private blocks of running requests plus hash-named prefix blocks.

    Every hash-named block is a key of ``refs``: a count > 0 is the running requests that use
    it; an unreferenced (cached only) block holds a negative *tag* instead, the tag of the
    release that left it unreferenced. The eviction order (least recently used first; a
    prompt's tail before its head) is the queue of releases, oldest first, each the tuple of
    hashes it left unreferenced, in eviction order, with its tag. A block referenced again
    keeps its stale place in the queue: a place counts only while ``refs`` still holds its
    tag. So a release, the hot path, is two bulk updates (no per-block linked-list nodes, as
    an OrderedDict would make), and eviction skips stale places as it goes.
    """

    __slots__ = ("capacity", "private", "refs", "cached", "_queue", "_head", "_tag", "_places",
                 "_stale")
    STALE_SLACK = 64  # stale places beyond ``capacity`` that make the queue compact itself

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = capacity_blocks  # blocks of KV memory in the deployment
        self.private = 0                 # blocks reserved by running requests, not hash-named
        self.refs: dict[int, int] = {}   # block hash -> running requests using it, or its tag (< 0)
        self.cached = 0                  # unreferenced cached blocks (refs < 0)
        # releases, oldest first: (tag, hashes in eviction order); _head: places of the first
        # one already consumed
        self._queue: deque[tuple[int, tuple[int, ...]]] = deque()
        self._head = 0
        self._tag = 0       # the latest tag handed out (tags count down from -1)
        self._places = 0    # places in the queue not consumed (stale ones included)
        self._stale: dict[int, int] = {}  # tag -> stale places of its release not consumed

    @property
    def used(self) -> int:
        """Blocks holding data (referenced or cached)."""
        return self.private + len(self.refs)

    def counts(self) -> dict[int, int]:
        """Block hash -> running requests using it (0: cached only)."""
        return {h: max(c, 0) for h, c in self.refs.items()}

    def eviction_order(self) -> list[int]:
        """The unreferenced cached blocks, the next to be evicted first."""
        return live_blocks(self._queue, self._head, self.refs)

    def leading_hits(self, hashes: Sequence[int], limit: int) -> int:
        hit, refs = 0, self.refs
        while hit < limit and hashes[hit] in refs:
            hit += 1
        return hit

    def try_reserve(self, hits: Sequence[int], need: int) -> bool:
        """Reference the cached blocks ``hits`` and reserve ``need`` new blocks, evicting LRU
        blocks as needed; False (nothing changed) if they cannot fit."""
        refs = self.refs
        hits_cached = sum(1 for h in hits if refs[h] < 0)
        free = self.capacity - self.used
        if need > free + self.cached - hits_cached:
            return False
        for h in hits:
            count = refs[h]
            if count < 0:
                refs[h] = 1
                self._unqueue(count)
            else:
                refs[h] = count + 1
        if need > free:  # the least recently used blocks go, oldest first
            self._evict(need - free)
        self.private += need
        return True

    def _unqueue(self, tag: int) -> None:
        """A cached block of the release ``tag`` is referenced again: its place goes stale."""
        self.cached -= 1
        self._stale[tag] = self._stale.get(tag, 0) + 1

    def _evict(self, n: int) -> None:
        refs, queue, pos, stale = self.refs, self._queue, self._head, self._stale
        self.cached -= n
        while n:
            tag, hashes = queue[0]
            end, start = len(hashes), pos
            if tag not in stale:  # every place left is live: the next ones go in bulk
                pos += min(n, end - pos)
                for h in hashes[start:pos]:
                    del refs[h]
                n -= pos - start
            else:
                while pos < end and n:
                    h = hashes[pos]
                    pos += 1
                    if refs.get(h) == tag:
                        del refs[h]
                        n -= 1
                    elif stale[tag] == 1:
                        del stale[tag]
                        break
                    else:
                        stale[tag] -= 1
            self._places -= pos - start
            if pos == end:
                queue.popleft()
                stale.pop(tag, None)
                pos = 0
        self._head = pos

    def register(self, hashes: Sequence[int]) -> None:
        """Private blocks now computed become the cached blocks ``hashes`` (a block another
        request computed meanwhile is shared, and the private copy freed)."""
        self.private -= len(hashes)
        refs = self.refs
        if refs.keys().isdisjoint(hashes):  # all new (the common case): one C-level update
            size = len(refs)
            refs.update(zip(hashes, repeat(1)))
            if len(refs) - size == len(hashes):
                return
            for h in dict.fromkeys(hashes):  # a block repeats: undone, counted one by one
                del refs[h]
        for h in hashes:
            count = refs.get(h)
            if count is None:
                refs[h] = 1
            elif count < 0:
                refs[h] = 1
                self._unqueue(count)
            else:
                refs[h] = count + 1

    def drop_unreferenced(self) -> int:
        """Evict every cached block no running request uses; returns how many."""
        refs = self.refs
        for h in [h for h, c in refs.items() if c < 0]:
            del refs[h]
        dropped, self.cached = self.cached, 0
        self._queue.clear()
        self._stale.clear()
        self._head = self._places = 0
        return dropped

    def release(self, held: Sequence[int], private: int) -> None:
        """Drop a request's blocks; its hashed blocks stay cached, tail first in eviction order."""
        self.private -= private
        if not held:
            return
        refs = self.refs
        counts = operator.itemgetter(*held)(refs) if len(held) > 1 else (refs[held[0]],)
        if counts.count(1) == len(held):  # no other user (so no repeats): one update each
            freed: tuple[int, ...] = tuple(reversed(held))
        else:
            left = []
            for h in reversed(held):
                count = refs[h] - 1
                refs[h] = count
                if count == 0:
                    left.append(h)
            freed = tuple(left)
            if not freed:
                return
        self._tag -= 1
        refs.update(zip(freed, repeat(self._tag)))  # (no repeats in freed)
        self._queue.append((self._tag, freed))
        self.cached += len(freed)
        self._places += len(freed)
        if self._places - self.cached > self.capacity + self.STALE_SLACK:  # stale places
            self._compact()

    def _compact(self) -> None:
        """Forget the stale places (blocks referenced again since): the queue stays bounded."""
        self._queue, self._places = compacted(self._queue, self._head, self.refs)
        self._head = 0
        self._stale.clear()
