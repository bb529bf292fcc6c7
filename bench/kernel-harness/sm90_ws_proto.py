#!/usr/bin/env python3
"""Dev-machine check (no GPU) of the warp-specialised kernel's synchronisation protocol (native/kernels/sm90_ws_*.cuh): a randomised interleaving model of the
producer, the two consumer warpgroups, the K/V full/empty mbarriers (expect-tx, asynchronous TMA completion)
and the ping-pong named barriers. Asserts no deadlock, each consumer reads the tile it expects from a slot no
copy is overwriting, and no named-barrier arrival left over. Mirror of the kernel: keep in step with it.
usage: python3 sm90_ws_proto.py"""
import random

class MBar:
    def __init__(s, count): s.count = count; s.pending = count; s.tx = 0; s.done = 0
    def _check(s):
        if s.pending == 0 and s.tx == 0: s.done += 1; s.pending = s.count
    def arrive(s, w=1): s.pending -= w; assert s.pending >= 0; s._check()
    def expect_tx(s, b): s.tx += b; s.arrive()
    def complete_tx(s, b): s.tx -= b; s._check()
    def passed(s, parity): return (s.done & 1) != parity

class NBar:   # bar.sync / bar.arrive with a count of 2 warpgroups (each contributes 1 here)
    def __init__(s): s.arrived = 0; s.waiting = 0; s.gen = 0
    def arrive(s):
        s.arrived += 1
        if s.arrived == 2:
            assert s.waiting == 1, "named barrier completed without its waiter"
            s.arrived = 0; s.waiting = 0; s.gen += 1
    def sync_start(s):
        s.waiting += 1; g = s.gen; s.arrive(); return g

def run(n_tiles, ST, seed):
    rnd = random.Random(seed)
    kf = [MBar(1) for _ in range(ST)]; ke = [MBar(8) for _ in range(ST)]
    vf = [MBar(1) for _ in range(ST)]; ve = [MBar(8) for _ in range(ST)]
    qf = MBar(1); nb = [NBar(), NBar()]
    kslot = [None] * ST; vslot = [None] * ST; kread = [0] * ST; vread = [0] * ST   # readers in flight per slot
    inflight = []   # pending TMA completions: (bar, slots, idx, tile, bytes)
    def tma(bar, arr, readers, idx, tile):
        assert readers[idx] == 0, "TMA overwrites a slot a consumer still reads"
        arr[idx] = ("pending", tile); inflight.append((bar, arr, idx, tile))
    def producer():
        qf.expect_tx(1); inflight.append((qf, None, 0, 0))
        st = {"k": [0, 0], "v": [0, 0]}
        def load(kind, n):
            idx, ph = st[kind]
            e, f, arr, rd = (ke, kf, kslot, kread) if kind == "k" else (ve, vf, vslot, vread)
            while not e[idx].passed(ph ^ 1): yield
            f[idx].expect_tx(1); tma(f[idx], arr, rd, idx, n)
            idx += 1
            if idx == ST: idx = 0; ph ^= 1
            st[kind] = [idx, ph]
        yield from load("k", 0)
        for n in range(1, n_tiles):
            yield from load("k", n); yield from load("v", n - 1)
        yield from load("v", n_tiles - 1)
    def consumer(cw):
        my, other = nb[cw], nb[1 - cw]
        if cw == 0: nb[0].arrive()   # pre-arrive (done by consumer 0 at start)
        while not qf.passed(0): yield
        ks = [0, 0]; vs = [0, 0]
        def adv(s):
            s[0] += 1
            if s[0] == ST: s[0] = 0; s[1] ^= 1
        def nsync():
            g = my.sync_start()
            while my.gen == g: yield
        def hand_over(n):
            if cw == 0 or n + 1 < n_tiles: other.arrive()
        def wait_full(f, s):
            while not f[s[0]].passed(s[1]): yield
        # tile 0
        yield from wait_full(kf, ks)
        yield from nsync()
        assert kslot[ks[0]] == ("ok", 0); kread[ks[0]] += 1; ki = ks[0]
        hand_over(0)
        yield; kread[ki] -= 1; ke[ki].arrive(4); adv(ks)
        for n in range(1, n_tiles):
            yield from wait_full(kf, ks)
            yield from nsync()
            assert kslot[ks[0]] == ("ok", n), (kslot, ks, n); kread[ks[0]] += 1; ki = ks[0]
            yield from wait_full(vf, vs)
            assert vslot[vs[0]] == ("ok", n - 1); vread[vs[0]] += 1; vi = vs[0]
            hand_over(n)
            yield; kread[ki] -= 1; ke[ki].arrive(4); adv(ks)
            yield; vread[vi] -= 1; ve[vi].arrive(4); adv(vs)
        yield from wait_full(vf, vs)
        assert vslot[vs[0]] == ("ok", n_tiles - 1); vread[vs[0]] += 1; vi = vs[0]
        yield; vread[vi] -= 1; ve[vi].arrive(4); adv(vs)
    agents = [producer(), consumer(0), consumer(1)]
    live = list(range(3)); stall = 0
    while live or inflight:
        choices = live + (["tma"] if inflight else [])
        c = rnd.choice(choices)
        if c == "tma":
            bar, arr, idx, tile = inflight.pop(rnd.randrange(len(inflight)))
            if arr is not None: arr[idx] = ("ok", tile)
            bar.complete_tx(1); stall = 0; continue
        try:
            next(agents[c]); stall += 1
        except StopIteration:
            live.remove(c); stall = 0
        assert stall < 100000, f"deadlock n_tiles={n_tiles} ST={ST}"
    for b in nb: assert b.arrived == 0 and b.waiting == 0, "named barrier arrivals left over"
for ST in (2, 3):
    for n in (1, 2, 3, 5, 17):
        for seed in range(200):
            run(n, ST, seed)
print("protocol model OK")
