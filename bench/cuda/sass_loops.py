#!/usr/bin/env python3
"""Loops of one kernel's SASS (cuobjdump -sass -fun NAME): each backward branch [target, branch], its
instruction count, and its loads/stores/FP ops. Usage: loops.py file.sass"""
import re, sys
ins = []
for line in open(sys.argv[1]):
    m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?);', line)
    if m:
        ins.append((int(m.group(1), 16), m.group(2).strip()))
addr = {a: i for i, (a, _) in enumerate(ins)}
for i, (a, text) in enumerate(ins):
    m = re.search(r'BRA (0x[0-9a-f]+)', text)
    if m and int(m.group(1), 16) < a:
        j = addr[int(m.group(1), 16)]
        body = [t for _, t in ins[j:i + 1]]
        ops = {}
        for t in body:
            op = re.sub(r'^@!?U?P[T0-9]+\s+', '', t).split()[0]
            ops[op] = ops.get(op, 0) + 1
        key = ' '.join(f'{k}:{v}' for k, v in sorted(ops.items(), key=lambda kv: -kv[1]) if re.match(r'(LD|ST|F|SHFL|BAR|HADD|HFMA|DADD|DFMA|DMUL)', k))
        print(f'loop {ins[j][0]:#06x}-{a:#06x}: {len(body)} instr  [{key}]')
