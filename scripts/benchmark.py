"""Speed figures for foresight-lite on this machine. Prints numbers; asserts nothing.

    python scripts/benchmark.py            # all sections
    python scripts/benchmark.py traces     # one section

traces: 1,000 annotated search trajectories with Monte Carlo q (target: under 60 s on 2 cores),
        the same for math, and the cost of the raw BM25 search (uncached queries).
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def bench_traces() -> None:
    from foresight_lite.envs import Action, make_env
    from foresight_lite.traces import DEFAULT_K, generate_traces

    for world in ("search", "math"):
        start = time.perf_counter()
        traces = generate_traces(world, n=1000, seed=0, progress=False)
        seconds = time.perf_counter() - start
        steps = sum(len(t["steps"]) for t in traces)
        print(f"traces  {world:6}  1000 trajectories, {steps} steps, K={DEFAULT_K}: {seconds:6.2f} s "
              f"({1000 / seconds:,.0f} trajectories/s)")
    env = make_env("search", seed=0, split="train")
    env.reset(0)
    names = env.world.names
    start = time.perf_counter()
    for name in names:
        env.index.search.__wrapped__(env.index, name)  # bypass the cache: the real BM25 cost
    per_query = (time.perf_counter() - start) / len(names)
    print(f"search  bm25s retrieval, uncached: {1000 * per_query:.2f} ms/query over {len(names)} queries")
    start = time.perf_counter()
    for name in names:
        env.reset(0)
        env.step(Action.call("search", query=name))
    print(f"search  reset + step, cached queries: {1e6 * (time.perf_counter() - start) / len(names):.0f} µs")


SECTIONS = {"traces": bench_traces}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of: {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for name in args.sections or SECTIONS:
        SECTIONS[name]()


if __name__ == "__main__":
    main()
