#!/usr/bin/env python3
"""One markdown table of per-kernel Nsight Compute metrics (scripts/gpu-ncu.sh's raw CSV page).

    ncu_table.py <ncu raw csv> <elements T*B*C> <dtype label>

inst/elem is thread instructions per element: smsp__inst_executed (warp instructions) x 32 / elements,
the unit of bench/cuda/BUDGET.md and shared/GPU-PROFILE.md. Rows whose CSV cannot be read fail loudly.
"""
import csv
import io
import sys


def rows_of(text):
    # ncu prints program output and "==PROF==" lines before the CSV; the CSV starts at the header line.
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        raise SystemExit("ncu_table: no CSV header (\"ID\",...) in the ncu output")
    reader = csv.reader(io.StringIO("\n".join(lines[start:])))
    header = next(reader)
    units = next(reader)  # the raw page's second row holds units
    del units
    return [dict(zip(header, r)) for r in reader if len(r) == len(header)]


def num(row, key):
    v = row.get(key, "").replace(",", "")
    try:
        return float(v)
    except ValueError:
        return float("nan")


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    path, elements, dtype = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    rows = rows_of(open(path, encoding="utf-8", errors="replace").read())
    if not rows:
        raise SystemExit(f"ncu_table: no kernel rows in {path}")
    print(f"## {dtype}: {int(elements)} elements (T*B*C)\n")
    print("| kernel | time (us) | inst/elem | DRAM % | issue IPC | regs | smem/block (B) | occupancy % | grid x block |")
    print("|---|---|---|---|---|---|---|---|---|")
    total_time = 0.0
    total_inst = 0.0
    for r in rows:
        name = r.get("Kernel Name", "?").split("(")[0].split("<")[0].replace("void ", "").strip()
        t_ns = num(r, "gpu__time_duration.sum")
        inst = num(r, "smsp__inst_executed.sum")
        total_time += t_ns
        total_inst += inst
        smem = num(r, "launch__shared_mem_per_block_dynamic") + num(r, "launch__shared_mem_per_block_static")
        print(f"| {name} | {t_ns / 1e3:.1f} | {inst * 32 / elements:.1f} | "
              f"{num(r, 'dram__throughput.avg.pct_of_peak_sustained_elapsed'):.1f} | "
              f"{num(r, 'sm__inst_executed.avg.per_cycle_active'):.2f} | {num(r, 'launch__registers_per_thread'):.0f} | "
              f"{smem:.0f} | {num(r, 'sm__warps_active.avg.pct_of_peak_sustained_active'):.0f} | "
              f"{num(r, 'launch__grid_size'):.0f} x {num(r, 'launch__block_size'):.0f} |")
    print(f"| **all** | {total_time / 1e3:.1f} | {total_inst * 32 / elements:.1f} | | | | | | |\n")
    stall_table(rows)


STALL = "smsp__average_warps_issue_stalled_"
STALL_END = "_per_issue_active.ratio"


def stall_table(rows):
    """Where warps wait (scripts/gpu-ncu.sh with STALLS=1): cycles a warp spends stalled per issued
    instruction, by reason, the five largest per kernel; shared-memory bank conflicts; L2 hit rate."""
    keys = sorted({k for r in rows for k in r if k.startswith(STALL) and k.endswith(STALL_END)})
    if not keys:
        return
    print("Stalls: warp cycles per issued instruction by reason (the five largest), with the total "
          "(smsp__average_warp_latency_per_inst_issued), shared-memory bank conflicts (load / store "
          "wavefronts lost) and the L2 hit rate.\n")
    print("| kernel | cycles / issue | largest stall reasons | smem conflicts ld / st | L2 hit % |")
    print("|---|---|---|---|---|")
    for r in rows:
        name = r.get("Kernel Name", "?").split("(")[0].split("<")[0].replace("void ", "").strip()
        reasons = sorted(((num(r, k), k[len(STALL):-len(STALL_END)]) for k in keys), reverse=True)[:5]
        text = ", ".join(f"{why} {v:.2f}" for v, why in reasons if v == v and v > 0.005)
        ld = num(r, "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum")
        st = num(r, "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum")
        print(f"| {name} | {num(r, 'smsp__average_warp_latency_per_inst_issued.ratio'):.2f} | {text} | "
              f"{ld:.3g} / {st:.3g} | {num(r, 'lts__t_sector_hit_rate.pct'):.1f} |")
    print()


if __name__ == "__main__":
    main()
