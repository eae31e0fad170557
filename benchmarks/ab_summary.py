"""Per-round ratios (b / a) and their median from the JSON lines of benchmarks/ab_flags.sh or ab_engine.sh.

  /usr/bin/python3 benchmarks/ab_summary.py benchmarks/results/freeze_ab_epyc.jsonl
"""
import json
import statistics
import sys


def figures(result):
    out = {}
    for s in result.get("score", []):
        out[f"score{s['sessions']} tokens/s"] = s["tokens_per_s"]
    for g in result.get("generate", []):
        n = g["sessions"]
        out[f"gen{n} tokens/s"] = g["tokens_per_s"]
        out[f"gen{n} gap p50 ms"] = g["gap_p50_ms"]
        out[f"gen{n} gap p99 ms"] = g["gap_p99_ms"]
    return out


def main(path):
    rounds = {}
    for line in open(path):
        if line.startswith("{"):
            row = json.loads(line)
            rounds.setdefault(row["round"], {})[row["build"]] = figures(row["result"])
    full = [r for r in sorted(rounds) if {"a", "b"} <= set(rounds[r])]
    for key in rounds[full[0]]["a"]:
        a = [rounds[r]["a"][key] for r in full]
        b = [rounds[r]["b"][key] for r in full]
        ratios = [y / x for x, y in zip(a, b) if x]
        print(f"{key:18s} a {' / '.join(f'{v:,.1f}' for v in a)}; b {' / '.join(f'{v:,.1f}' for v in b)}; "
              f"b/a {', '.join(f'{v:.2f}' for v in ratios)}; median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
