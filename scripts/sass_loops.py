#!/usr/bin/env python3
import re,sys
# Usage: cuobjdump -sass <binary or cubin> > k.sass; python3 scripts/sass_loops.py k.sass  (one function per file)
# Lists the loops of a SASS dump (backward branches) with their instruction counts and key opcodes.
lines=open(sys.argv[1]).read().splitlines()
ins=[]
for l in lines:
    m=re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?);',l)
    if m: ins.append((int(m.group(1),16),m.group(2).strip()))
addr={a:i for i,(a,_) in enumerate(ins)}
print("total instructions", len(ins))
for i,(a,t) in enumerate(ins):
    m=re.search(r'BRA (?:`\(\.L_x_\d+\) )?0x([0-9a-f]+)',t)
    if m:
        tgt=int(m.group(1),16)
        if tgt<=a and tgt in addr:
            j=addr[tgt]; body=[x[1] for x in ins[j:i+1]]
            ops={}
            for b in body:
                op=b.split()[0] if not b.startswith('@') else b.split()[1]
                op=op.split('.')[0]
                ops[op]=ops.get(op,0)+1
            key=",".join(f"{k}:{v}" for k,v in sorted(ops.items(),key=lambda x:-x[1]) if k in("LDG","LDS","FFMA","MATCH","STS","FADD","BAR","STG","SHFL","LOP3","IMAD","PRMT","F2FP","LDL","STL"))
            print(f"loop {tgt:05x}-{a:05x}: {i-j+1} instrs  [{key}]")
