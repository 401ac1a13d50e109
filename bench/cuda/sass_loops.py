#!/usr/bin/env python3
"""Instruction counts of the loops of one kernel's SASS (for the budget files).

  cuobjdump -sass -fun <mangled kernel name> file.cubin > k.sass
  sass_loops.py k.sass               every loop (a backward branch): its body's instructions by opcode
  sass_loops.py k.sass LO HI         the loop at hex addresses [LO, HI]: also its fast path, i.e. without
                                     the blocks a two-predicate branch "@P BRA P', X" jumps over (the
                                     element-load fallbacks next to 16-byte / pair loads)
These are static counts of the SASS, not executed counts: divide by the elements one pass of the loop
handles per thread to get instructions per element, and say so.
"""
import collections
import re
import sys


def parse(path):
    out = []
    for line in open(path).read().splitlines():
        m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?);', line)
        if m:
            out.append((int(m.group(1), 16), m.group(2).strip()))
    return out


def opcodes(body):
    return collections.Counter(re.sub(r'^@!?U?P\w+\s+', '', t).split()[0].split('.')[0] for _, t in body)


def show(label, body):
    ops = opcodes(body)
    print(f"{label}: {len(body)} instructions: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))


def main():
    ins = parse(sys.argv[1])
    if len(sys.argv) == 4:
        lo, hi = int(sys.argv[2], 16), int(sys.argv[3], 16)
        loop = [x for x in ins if lo <= x[0] <= hi]
        skip = set()
        for i, (_, t) in enumerate(loop):
            m = re.match(r'@!?P\d\s+BRA\s+!?P\d,\s*(0x[0-9a-f]+)', t)
            if m:
                target = int(m.group(1), 16)
                for b, _ in loop[i + 1:]:
                    if b >= target:
                        break
                    skip.add(b)
        show(f"loop {lo:#06x}-{hi:#06x}", loop)
        show("fast path", [x for x in loop if x[0] not in skip])
        return
    index = {a: i for i, (a, _) in enumerate(ins)}
    for i, (a, t) in enumerate(ins):
        m = re.search(r'\bBRA\b.*?(0x[0-9a-f]+)', t)
        if m:
            target = int(m.group(1), 16)
            if target <= a and target in index:
                show(f"loop {target:#06x}-{a:#06x}", ins[index[target]:i + 1])


if __name__ == '__main__':
    main()
