"""Records steps.txt and sr.data for analyse.py (see README.txt). Needs a build with trace.patch applied,
root (perf sched record -a), and a quiet machine. Run from the repository root:
  /usr/bin/python3 benchmarks/results/p99_sources_epyc/record.py OUT_DIR
then: perf sched timehist -i OUT_DIR/sr.data > OUT_DIR/timehist.txt"""
import os
import subprocess
import sys
import time

ROOT = os.getcwd()
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from conftest import BrtServer, STUBS, corpus_docs, score  # noqa: E402
from bench_engine import cut_at_newline, server_generate, server_score, verse_prompts  # noqa: E402
from bench_util import percentile  # noqa: E402

out = os.path.abspath(sys.argv[1])
os.makedirs(out, exist_ok=True)
pb = STUBS.pb
docs = {d["name"]: d["text"].encode() for d in corpus_docs("test")}
acts, eze = docs["kjv/Acts"], docs["kjv/Eze"]
texts8 = [cut_at_newline(eze[i * 20000:(i + 1) * 20000]) for i in range(8)]
prompts = verse_prompts(acts, 32)
os.environ["BRT_TRACE_STEPS"] = os.path.join(out, "steps.txt")
s = BrtServer(threads=2)
try:
    server_score(s, pb, score, [t[:1500] for t in texts8])
    server_generate(s, pb, prompts[:2], 16)
    server_score(s, pb, score, texts8)
    server_generate(s, pb, prompts[:1], 256)
    p = subprocess.Popen(["perf", "sched", "record", "-k", "CLOCK_MONOTONIC", "-o", os.path.join(out, "sr.data"),
                          "-a"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    for _ in range(3):
        tps, gaps, _ = server_generate(s, pb, prompts, 256)
        print("tokens/s", round(tps), "p99/p50", round(percentile(gaps, 99) / percentile(gaps, 50), 2), flush=True)
    p.send_signal(2)
    p.wait()
finally:
    s.stop()
