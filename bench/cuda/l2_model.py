#!/usr/bin/env python3
"""An L2 model of the fused kernels' re-reads (a design tool for bench/cuda/BUDGET.md; no device involved).

  l2_model.py [--dtype f32|bf16] [--kernel fwd|bwd] [--l2-mb 50] [--blocks-per-sm 2] [--rows 128] [--no-hints] [--seed 1]

The fused layer forward (agent_forward_fused.cuh) reads a time tile of x (rows x C) in the projection, then re-reads
it channel block by channel block, the last first, with its halo rows, under L2 evict-first; y is stored
evict-first. The fused window backward (agent_backward_fused.cuh) reads dy the same way (the gather, then the banded
dx's re-read). Whether the re-read comes from L2 decides the kernel's DRAM bytes, and depends on how much other data
streams in between: this script replays the accesses of every block of the benchmark shape (T = 4096, B = 16,
C = 1024, L = M = 16, tbc), blocks scheduled as the hardware does (blocks_per_sm x 132 SMs slots, in blockIdx order,
each block's phases a fixed share of its time, +-15% jitter so the waves drift apart), through an L2 of 128-byte
lines with LRU replacement for normal lines and evict-first lines evicted before any normal one (a hit under the
evict-first policy demotes the line). It prints the re-read's hit rate and the DRAM bytes against the two-kernel
path's. A model: it ignores the L2's partitions, sectors, hashing and the write-back of y; ncu's lts hit rates on a
device are the measurement (gpu-lease.sh's ncu step, STALLS=1).
"""
import argparse
import collections
import heapq
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dtype', default='f32', choices=['f32', 'bf16'])
    ap.add_argument('--kernel', default='fwd', choices=['fwd', 'bwd'])
    ap.add_argument('--l2-mb', type=float, default=50.0)
    ap.add_argument('--blocks-per-sm', type=int, default=2)
    ap.add_argument('--sms', type=int, default=132)
    ap.add_argument('--rows', type=int, default=128, help='time tile of a block')
    ap.add_argument('--T', type=int, default=4096)
    ap.add_argument('--B', type=int, default=16)
    ap.add_argument('--C', type=int, default=1024)
    ap.add_argument('--halo', type=int, default=17, help='rows each side the window reads past the tile (L + 1)')
    ap.add_argument('--first-share', type=float, default=None,
                    help="the first phase's share of a block's time (default: by the SASS estimates)")
    ap.add_argument('--no-hints', action='store_true',
                    help='re-reads and stores as normal lines (TALKCONV_CUDA_L2_HINTS=0, and y stored plainly)')
    ap.add_argument('--seed', type=int, default=1)
    a = ap.parse_args()

    esize = 4 if a.dtype == 'f32' else 2
    line = 128
    ch_per_line = line // esize            # channels of one row in a line
    lines_per_row = a.C // ch_per_line
    cb_lines = 64 // ch_per_line if ch_per_line <= 64 else 1  # lines of a 64-channel block's row
    if ch_per_line > 64:
        raise SystemExit('channel blocks narrower than a line are not modelled')
    cbs = a.C // 64
    tiles = (a.T + a.rows - 1) // a.rows
    nblocks = a.B * tiles
    # First phase's share of the block's time: projection (fwd) or gather (bwd) instructions per element against the
    # whole (BUDGET.md: f32 fused forward 13.2 of 42, bf16 5.8 of 24; bf16 fused backward gather ~22 of ~52).
    if a.first_share is not None:
        share = a.first_share
    elif a.kernel == 'fwd':
        share = 13.2 / 42 if a.dtype == 'f32' else 5.8 / 24
    else:
        share = 22.0 / 52
    cap = int(a.l2_mb * 1024 * 1024) // line

    def xline(t, b, l):  # the line holding channels [l * ch_per_line, ...) of row (t, b), tbc layout
        return (t * a.B + b) * lines_per_row + l

    def yline(t, b, l):
        return -1 - xline(t, b, l)

    normal = collections.OrderedDict()  # LRU: oldest first
    ef = collections.OrderedDict()      # evict-first: oldest first, evicted before any normal line
    stats = collections.Counter()

    def evict():
        while len(normal) + len(ef) > cap:
            if ef:
                ef.popitem(last=False)
            else:
                normal.popitem(last=False)

    def read(key, evict_first, kind):
        hit = key in normal or key in ef
        stats[kind + '_hit' if hit else kind + '_miss'] += 1
        if evict_first:
            normal.pop(key, None)
            ef.pop(key, None)
            ef[key] = True
        else:
            if key in ef:
                del ef[key]
            normal.pop(key, None)
            normal[key] = True
        evict()

    def store_ef(key):
        normal.pop(key, None)
        ef.pop(key, None)
        ef[key] = True
        evict()

    def chunks(blk):
        """The block's accesses as (fraction of its time, list of (op, key)) chunks."""
        b, it = divmod(blk, tiles)
        t0, t1 = it * a.rows, min(a.T, it * a.rows + a.rows)
        out = []
        # first phase: the tile's rows, every channel, in k tiles of 32 channels (a line of f32, half of one in bf16)
        k_lines = max(1, 32 // ch_per_line)
        steps = lines_per_row // k_lines
        for s in range(steps):
            acc = [('x', xline(t, b, s * k_lines + j)) for t in range(t0, t1) for j in range(k_lines)]
            out.append((share * (s + 1) / steps, acc))
        # second phase: channel blocks, the last first: the span re-read evict-first, then the tile's output stores
        lo, hi = max(0, t0 - a.halo), min(a.T, t1 + a.halo)
        for i, cb in enumerate(reversed(range(cbs))):
            acc = [('r', xline(t, b, cb * cb_lines + j)) for t in range(lo, hi) for j in range(cb_lines)]
            acc += [('y', yline(t, b, cb * cb_lines + j)) for t in range(t0, t1) for j in range(cb_lines)]
            out.append((share + (1 - share) * (i + 1) / cbs, acc))
        return out

    rng = random.Random(a.seed)
    slots = a.sms * a.blocks_per_sm
    heap = []  # (time, seq, block, chunk index, start, duration, chunks)
    seq = 0
    next_block = 0

    def start(blk, t):
        nonlocal seq
        dur = 1.0 + rng.uniform(-0.15, 0.15)
        ch = chunks(blk)
        heapq.heappush(heap, (t + ch[0][0] * dur, seq, blk, 0, t, dur, ch))
        seq += 1

    for _ in range(min(slots, nblocks)):
        start(next_block, 0.0)
        next_block += 1
    while heap:
        t, _, blk, i, t_start, dur, ch = heapq.heappop(heap)
        for op, key in ch[i][1]:
            if op == 'x':
                read(key, False, 'first')
            elif op == 'r':
                read(key, not a.no_hints, 'reread')
            elif a.no_hints:
                read(key, False, 'store')
            else:
                store_ef(key)
        if i + 1 < len(ch):
            heapq.heappush(heap, (t_start + ch[i + 1][0] * dur, seq, blk, i + 1, t_start, dur, ch))
            seq += 1
        elif next_block < nblocks:
            start(next_block, t)
            next_block += 1

    mb = lambda n: n * line / 1e6
    x_mb = a.T * a.B * a.C * esize / 1e6
    rr = stats['reread_hit'] + stats['reread_miss']
    hit = stats['reread_hit'] / rr if rr else 0.0
    name = 'x' if a.kernel == 'fwd' else 'dy'
    fused = mb(stats['first_miss'] + stats['reread_miss'])
    print(f"{a.kernel} {a.dtype}: {nblocks} blocks of {a.rows} rows x {a.C} channels, {slots} slots, "
          f"L2 {a.l2_mb:g} MB, first phase {share:.2f} of a block{', no hints' if a.no_hints else ''}")
    print(f"  {name} first reads {mb(stats['first_hit'] + stats['first_miss']):.0f} MB (from DRAM: "
          f"{mb(stats['first_miss']):.0f} MB); re-reads {mb(rr):.0f} MB, L2 hit {100 * hit:.1f}%")
    print(f"  {name} from DRAM: fused {fused:.0f} MB against the two kernels' ~{2 * x_mb:.0f} MB "
          f"(each reads it once; the second's halo from L2)")


if __name__ == '__main__':
    main()
