"""Cuts a perf recording of Prosody into the generator's measured windows.

    python3 benches/prosody/slice.py OUT [PHASE ...]

OUT.loadgen is the output of `loadgen --marks` and OUT.samples that of `perf
script -F time,ip,sym,dso` (benches/prosody/profile phases writes both). For
each measured window: Prosody's CPU milliseconds per 1,000 round trips, by
group of functions (the collector, the allocator, the rest of Lua, the
module's library, the kernel); with PHASE numbers (0 is the first row), the
functions of those phases.
"""
import collections
import re
import sys

HZ = 2000  # perf record -F
GROUPS = {
    "gc": r"(propagatemark|sweepstep|reallymarkobject|singlestep|traverse|luaC_|GCTM"
          r"|sweeplist|freeobj|luaF_free|luaH_free|luaS_remove|markbeingfnz|atomic"
          r"|clearby|remarkupvals|entersweep|separatetobefnz|luaD_shrinkstack"
          r"|luaE_shrinkCI|convergeephemerons|udata2finalize|genstep|youngcollection"
          r"|mark)",
    "malloc": r"(_int_malloc|_int_free|malloc|free|cfree|realloc|_int_realloc"
              r"|malloc_consolidate|counting_alloc|unlink_chunk|tcache)",
}
COLUMNS = ["gc", "malloc", "lua", "module", "kernel", "other"]


def group(sym, dso):
    if "client_proxy" in dso:
        return "module"
    if "kernel" in dso:
        return "kernel"
    for name, pattern in GROUPS.items():
        if re.match(pattern, sym):
            return name
    return "lua" if "lua-sym" in dso else "other"


def main(out, shown):
    phases = []
    for line in open(out + ".loadgen"):
        m = re.match(r"^(\d+)\s+(\S+)\s+(\d+)\s.*window ([\d.]+) ([\d.]+)", line)
        if m:
            cpu = re.search(r"([\d.]+)ms", line)
            phases.append((m.group(1), m.group(2), float(m.group(3)),
                           float(m.group(4)), float(m.group(5)),
                           float(cpu.group(1)) if cpu else float("nan")))
    groups = [collections.Counter() for _ in phases]
    symbols = [collections.Counter() for _ in phases]
    for line in open(out + ".samples"):
        m = re.match(r"\s*([\d.]+):\s+[0-9a-f]+\s+(\S+)\s+\((.*)\)", line)
        if not m:
            continue
        t = float(m.group(1))
        for i, p in enumerate(phases):
            if p[3] <= t < p[4]:
                groups[i][group(m.group(2), m.group(3))] += 1
                symbols[i][m.group(2)] += 1
                break
    print("Prosody's CPU ms per 1,000 round trips, by group (perf at %d Hz)" % HZ)
    print("%-4s %-8s %6s %7s  " % ("pair", "mode", "rt/s", "cpu/1k")
          + " ".join("%7s" % c for c in COLUMNS))
    per_1k = lambda n, p: n * 1000.0 / HZ * 1000.0 / (p[2] * (p[4] - p[3]))
    for p, g in zip(phases, groups):
        print("%-4s %-8s %6.0f %7.1f  " % (p[0], p[1], p[2], p[5])
              + " ".join("%7.1f" % per_1k(g[c], p) for c in COLUMNS))
    for i in shown:
        p = phases[i]
        print("\nphase %d (pair %s, %s):" % (i, p[0], p[1]))
        for sym, n in symbols[i].most_common(20):
            print("  %7.1f  %s" % (per_1k(n, p), sym))


if __name__ == "__main__":
    main(sys.argv[1], [int(a) for a in sys.argv[2:]])
