#!/usr/bin/env python3
"""Every CUDA kernel's registers, stack (spills and frame) and static shared memory against its budget.

  resources.py BUDGET BINARY...          check (sm_90 code, the architecture the budget was read on): exit 1 on a kernel over its budget, a kernel without a budget
                                         line, or a budget line that names no kernel; a table either way
  resources.py --table BINARY...         print the table only (per kernel: the most over its instantiations)

BUDGET (bench/cuda/resources.txt): one line per kernel and storage type, `name<T> max_registers max_stack_bytes
max_static_shared` (the name without namespace, with its first template argument only; # starts a comment). The numbers come from
`cuobjdump -res-usage` (CUDA's own report of what ptxas allocated: REG, STACK = spill slots + call frame,
SHARED = static shared memory including the 1 KiB the runtime reserves on sm_90), taken as the most over a
kernel's instantiations of one storage type (index types, causality, fusion) in the given binaries: a ceiling
for the group (a variant below it may grow up to it unnoticed), not a check of each variant. Registers set occupancy and
stack bytes are local-memory traffic: a change that raises either changes a kernel's speed, so it must raise the
budget too, in the same commit, with the reason in bench/cuda/BUDGET.md. The tool is found as $CUOBJDUMP, on
PATH, next to nvcc, or in build/tools/bin (scripts/setup-deps.sh); without it, or without sm_90 code in the binaries, the check exits 77 (ctest: skipped,
never passed).
"""
import os
import re
import shutil
import subprocess
import sys


def find_cuobjdump():
    here = os.path.dirname(os.path.abspath(__file__))
    fetched = os.path.join(here, '..', '..', 'build', 'tools', 'bin', 'cuobjdump')  # scripts/setup-deps.sh's
    for c in (os.environ.get('CUOBJDUMP'), shutil.which('cuobjdump'), fetched):
        if c and os.path.isfile(c):
            return c
    nvcc = shutil.which('nvcc')
    if nvcc:
        c = os.path.join(os.path.dirname(os.path.realpath(nvcc)), 'cuobjdump')
        if os.path.isfile(c):
            return c
    return None


def kernel_key(demangled):
    """'void talkconv::cuda::detail::k<float, int, true>(args)' -> 'k<float>': the name and its first template
    argument (the storage type, for every templated kernel of the library but the block-shape ones)."""
    s = demangled.replace('(anonymous namespace)', 'anonymous')
    cut = next((i for i, ch in enumerate(s) if ch in '<('), len(s))  # the name ends at the first '<' or '('
    name = s[:cut].split(' ')[-1].split('::')[-1]
    if cut < len(s) and s[cut] == '<':
        first, depth = '', 0
        for ch in s[cut + 1:]:
            if ch in '<(':
                depth += 1
            elif ch in '>)':
                if depth == 0:
                    break
                depth -= 1
            elif ch == ',' and depth == 0:
                break
            first += ch
        name += '<' + first.strip() + '>'
    return name


def parse(text):
    """[(mangled, {'REG': n, 'STACK': n, 'SHARED': n})] from cuobjdump -res-usage output."""
    out, name = [], None
    for line in text.splitlines():
        m = re.match(r'\s*Function (\S+):\s*$', line)
        if m:
            name = m.group(1)
            continue
        if name and 'REG:' in line:
            vals = dict((k, int(v)) for k, v in re.findall(r'(REG|STACK|SHARED|LOCAL):(\d+)', line))
            out.append((name, vals))
            name = None
    functions = sum(1 for line in text.splitlines() if line.strip().startswith('Function '))
    if functions != len(out):  # a format this script does not know: fail, never check nothing
        sys.exit(f'resources.py: {functions} "Function" lines but {len(out)} resource lines parsed')
    return out


ARCH = 'sm_90'


def usage(binaries, tool):
    rows = []
    for b in binaries:
        r = subprocess.run([tool, '-arch', ARCH, '-res-usage', b], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f'resources.py: {tool} -res-usage {b} failed: {r.stderr.strip()}')
        rows += parse(r.stdout)
    if not rows:
        return None
    mangled = [m for m, _ in rows]
    dem = subprocess.run(['c++filt'], input='\n'.join(mangled), capture_output=True, text=True).stdout.splitlines()
    if len(dem) != len(mangled):
        sys.exit(f'resources.py: c++filt gave {len(dem)} names for {len(mangled)} kernels')
    most = {}
    for (m, v), d in zip(rows, dem):
        cut = next((i for i, ch in enumerate(d) if ch in '<('), len(d))
        if 'talkconv::' not in d[:cut]:  # the library's kernels only (not CUB's it instantiates, a test's or a benchmark's helpers)
            continue
        k = kernel_key(d)
        cur = most.setdefault(k, {'REG': 0, 'STACK': 0, 'SHARED': 0, 'n': 0})
        for f in ('REG', 'STACK', 'SHARED'):
            cur[f] = max(cur[f], v.get(f, 0))
        cur['n'] += 1
    if not most:
        sys.exit('resources.py: no talkconv kernel among ' + str(len(rows)) + ' in ' + ' '.join(binaries))
    return most


def read_budget(path):
    budget = {}
    for i, line in enumerate(open(path), 1):
        line = line.split('#', 1)[0].split()
        if not line:
            continue
        if len(line) < 4 or not all(x.isdigit() for x in line[-3:]):  # a name may hold spaces: k<unsigned int>
            sys.exit(f'{path}:{i}: want "name max_registers max_stack_bytes max_static_shared"')
        budget[' '.join(line[:-3])] = tuple(int(x) for x in line[-3:])
    return budget


def main(argv):
    table_only = argv[:1] == ['--table']
    budget_path = None
    if table_only:
        binaries = argv[1:]
    else:
        if len(argv) < 2:
            sys.exit(__doc__)
        budget_path, binaries = argv[0], argv[1:]
    if not binaries:
        sys.exit(__doc__)
    tool = find_cuobjdump()
    if tool is None:
        print('resources.py: no cuobjdump ($CUOBJDUMP, PATH, next to nvcc, build/tools/bin): not checked '
              '(scripts/setup-deps.sh fetches one into build/tools)')
        return 77
    most = usage(binaries, tool)
    if most is None:
        print(f'resources.py: no {ARCH} code in ' + ' '.join(binaries) + ': not checked')
        return 77
    width = max(len(k) for k in most)
    print(f'{"kernel".ljust(width)}  inst.  REG  STACK  SHARED   budget (REG STACK SHARED)')
    budget = {} if table_only else read_budget(budget_path)
    bad = []
    for k in sorted(most):
        v = most[k]
        b = budget.get(k)
        note = ''
        if not table_only:
            if b is None:
                note = '   NO BUDGET LINE'
                bad.append(f'{k}: no line in {budget_path}')
            else:
                note = f'   {b[0]:3d} {b[1]:5d} {b[2]:6d}'
                over = [f'{f} {v[f]} > {lim}' for f, lim in zip(('REG', 'STACK', 'SHARED'), b) if v[f] > lim]
                if over:
                    note += '   OVER: ' + ', '.join(over)
                    bad.append(f'{k}: ' + ', '.join(over))
        print(f'{k.ljust(width)}  {v["n"]:5d}  {v["REG"]:3d}  {v["STACK"]:5d}  {v["SHARED"]:6d}{note}')
    if not table_only:
        for k in sorted(set(budget) - set(most)):
            bad.append(f'{k}: budget line names no kernel in the binaries (renamed or removed?)')
    if bad:
        print('\nresources.py: ' + str(len(bad)) + ' problem(s):\n  ' + '\n  '.join(bad))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
