"""Which decode steps of a 32-session Generate run are long, and what else held the CPUs meanwhile.

Inputs (record.py makes both): steps.txt from a brt-server built with trace.patch (one line per model call:
wake, planned, run start, run end in steady-clock us; decode rows, span rows, score rows + 1000 per decode
row completing a block) and timehist.txt (`perf sched timehist -i sr.data`, recorded with -k CLOCK_MONOTONIC
so that its times are the steady clock's).
Usage: python3 analyse.py steps.txt timehist.txt
"""
import bisect
import collections
import sys

steps = [list(map(int, l.split())) for l in open(sys.argv[1])]
runs = []  # (cpu-time end, task, cpu, run ms)
for l in open(sys.argv[2]):
    f = l.split()
    if len(f) >= 6:
        try:
            runs.append((float(f[0]), f[2].split("[")[0], f[1], float(f[5])))
        except ValueError:
            pass
kd = [(end - ms / 1000, end) for end, task, _, ms in runs if task.startswith("kdamond")]
bursts = []  # kdamond's runs less than 10 ms apart, merged
for a, b in kd:
    if bursts and a - bursts[-1][1] < 0.01:
        bursts[-1][1] = b
    else:
        bursts.append([a, b])
q = lambda v, p: sorted(v)[min(len(v) - 1, int(len(v) * p))]
d32 = [r for r in steps if r[4] == 32 and kd and r[2] / 1e6 >= kd[0][0] - 1]


def overlaps(a, b):
    return any(x <= b and y >= a for x, y in kd)


cycles = []  # one step's start to the next's, both of 32 decode rows, within one run
for i in range(len(d32) - 1):
    a, b = d32[i][0] / 1e6, d32[i + 1][0] / 1e6
    if b - a < 0.03:
        cycles.append((a, b, overlaps(a, b), d32[i][6] >= 1000, d32[i]))
med = q([b - a for a, b, *_ in cycles], .5)
long = [c for c in cycles if c[1] - c[0] > 2 * med]
print(f"kdamond: {len(bursts)} bursts, every {q([y[0] - x[0] for x, y in zip(bursts, bursts[1:])], .5):.3f} s "
      f"(median), each {1000 * q([b - a for a, b in bursts], .5):.2f} ms of CPU (median)")
print(f"cycles (a 32-row step's start to the next's): {len(cycles)}, median {1000 * med:.2f} ms, "
      f"p99 {1000 * q([b - a for a, b, *_ in cycles], .99):.2f} ms")
print(f"cycles over 2x the median: {len(long)}; with kdamond running in them: {sum(c[2] for c in long)}; "
      f"with rows completing a block: {sum(c[3] for c in long)}")
rest = [b - a for a, b, k, *_ in cycles if not k]
print(f"without the cycles kdamond ran in: p99 / p50 {q(rest, .99) / q(rest, .5):.2f} "
      f"(all cycles: {q([b - a for a, b, *_ in cycles], .99) / med:.2f})")
fin = [b - a for a, b, k, f, _ in cycles if f and not k]
nofin = [b - a for a, b, k, f, _ in cycles if not f and not k]
print(f"median cycle with rows completing a block {1000 * q(fin, .5):.2f} ms, without {1000 * q(nofin, .5):.2f} ms")
ends = [r[0] for r in runs]
print("the long cycles without kdamond, and the tasks that ran most in them (ms):")
for a, b, k, f, r in long:
    if k:
        continue
    c = collections.Counter()
    for end, task, cpu, ms in runs[bisect.bisect_left(ends, a):bisect.bisect_right(ends, b)]:
        c[(task[:15], cpu)] += ms
    print(f"  {1000 * (b - a):.2f} ms, {r[6] // 1000} rows completing a block:",
          ", ".join(f"{t} {cpu} {ms:.2f}" for (t, cpu), ms in c.most_common(5)))
