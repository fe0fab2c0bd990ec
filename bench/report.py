#!/usr/bin/env python3
"""Turns bench/run.sh's raw results into the table.

  python3 bench/report.py RAW.tsv [NOTE ...]

RAW.tsv: one line per run: test, placement, client, value (or FAIL), unit,
and optionally a ratio measured within the run (codec_bench). Prints the
runs, then one row per (test, placement, client): how many runs, where they
ran (CPU placement by taskset), the median, the ratio of medians against the
reference client of that test (smtp-source; curl for (d); memcpy for (e),
where the median of the per-run ratios is used; for (f) the fastest other
client, and smtplib for its CPU rows), the target from the issue and
whether it is met.
"""
import statistics
import sys
from collections import OrderedDict

REFERENCE = {"a": "smtp-source", "a-cpu": "smtp-source", "b": "smtp-source",
             "c": "smtp-source", "d": "curl", "d-cpu": "curl", "d-rss": "curl",
             "e": "memcpy", "f-cpu": "smtplib", "f-srv": "smtplib"}

# Where each placement ran (bench/run.sh pins with taskset).
PLACEMENT = {
    "same": "client+server CPU0",
    "cross": "client CPU1, server CPU0",
    "postfix": "not pinned",
    "tls": "client CPU1, Postfix CPU0",
    "-": "CPU1",
}


def target(test, placement, client):
    """(text, check) where check(median, ratio) -> bool, or None."""
    lua = client.startswith("lua-smtp")
    if test == "a" and lua:
        if placement == "same":
            return ">= 1.25x smtp-source", lambda m, r: r is not None and r >= 1.25
        if placement == "cross":
            return ">= 3x smtp-source", lambda m, r: r is not None and r >= 3.0
    if test == "b" and lua and placement == "same":
        return ">= 1x smtp-source", lambda m, r: r is not None and r >= 1.0
    if test == "c" and lua and "CHUNKING" in client and "window=" in client:
        return "<= 0.5 RT/msg", lambda m, r: m <= 0.5
    if test == "f" and client == "lua-smtp":
        # the variants (no resumption, nothing kept) show what reuse saves
        return ">= 1.5x fastest other", lambda m, r: r is not None and r >= 1.5
    if test == "c" and lua and placement == "postfix":
        return None
    # sendmail hands over one message per call: with DATA its 354 and its
    # final reply are two round trips whatever the client does, so only
    # send_many, which can chain transactions, has a round-trip target.
    if test == "c" and lua and "send_many" in client:
        return "<= 1.2 RT/msg", lambda m, r: m <= 1.2
    if test == "d" and lua:
        return "<= curl time", lambda m, r: r is not None and r <= 1.0
    if test == "d-rss" and lua:
        return "< 8 MB", lambda m, r: m < 8.0
    if test == "e" and client == "frame":
        return ">= 0.35x memcpy", lambda m, r: r is not None and r >= 0.35
    return None


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return "%.0f" % v
    if abs(v) >= 100:
        return "%.1f" % v
    return "%.2f" % v


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    groups = OrderedDict()
    with open(sys.argv[1]) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                continue
            test, placement, client, value, unit = parts[:5]
            ratio = parts[5] if len(parts) > 5 and parts[5] else None
            g = groups.setdefault((test, placement, client),
                                  {"unit": unit, "values": [], "ratios": [], "fails": 0})
            if value == "FAIL" or value == "":
                g["fails"] += 1
            else:
                g["values"].append(float(value))
                if ratio is not None:
                    g["ratios"].append(float(ratio))

    if not groups:
        print("no results")
        sys.exit(1)

    print("runs (every value; medians below):")
    for (test, placement, client), g in groups.items():
        vals = " ".join(fmt(v) for v in g["values"])
        fails = " FAIL x%d" % g["fails"] if g["fails"] else ""
        print("  %-6s %-6s %-28s %s%s" % (test, placement, client, vals, fails))
    print()

    order = {"a": 0, "a-cpu": 1, "b": 2, "c": 3, "d": 4, "d-cpu": 5, "d-rss": 6, "e": 7,
             "f": 8, "f-cpu": 9, "f-srv": 10, "g": 11, "h": 12}
    porder = {"same": 0, "cross": 1}
    seen = {k: i for i, k in enumerate(groups)}
    groups = OrderedDict(sorted(groups.items(), key=lambda kv: (
        order.get(kv[0][0], 99), porder.get(kv[0][1], 2), seen[kv[0]])))

    medians = {k: (statistics.median(g["values"]) if g["values"] else None)
               for k, g in groups.items()}
    rows = []
    missed = 0
    for key, g in groups.items():
        test, placement, client = key
        med = medians[key]
        ref = REFERENCE.get(test)
        ratio = None
        if test == "f":
            # the other clients (smtplib, curl, swaks), not lua-smtp's own variants
            others = [m for (t2, p2, c2), m in medians.items()
                      if t2 == "f" and p2 == placement and not c2.startswith("lua-smtp")
                      and m is not None]
            if med is not None and others:
                ratio = med / max(others)
        elif g["ratios"]:
            ratio = statistics.median(g["ratios"])
        elif ref and client != ref:
            refmed = medians.get((test, placement, ref))
            if med is not None and refmed:
                ratio = med / refmed
        elif ref and client == ref and med is not None:
            ratio = 1.0
        t = target(test, placement, client)
        ttext, met = "-", "-"
        if t:
            ttext = t[0]
            if med is None or g["fails"]:
                met = "NO (%d failed)" % g["fails"] if g["fails"] else "NO (no data)"
            else:
                met = "yes" if t[1](med, ratio) else "NO"
            if met != "yes":
                missed += 1
        elif g["fails"]:
            met = "%d failed" % g["fails"]
        rows.append((test, PLACEMENT.get(placement, placement), client, str(len(g["values"])),
                     fmt(med), g["unit"], ("%.2fx" % ratio) if ratio is not None else "-",
                     ttext, met))

    head = ("test", "CPUs (taskset)", "client", "runs", "median", "unit", "ratio", "target",
            "met?")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join("%-*s" % (widths[i], head[i]) for i in range(len(head)))
    print(line)
    print("  ".join("-" * w for w in widths))
    prev = None
    for r in rows:
        if prev is not None and r[:2] != prev:
            print()
        prev = r[:2]
        print("  ".join(("%*s" if i in (3, 4, 6) else "%-*s") % (widths[i], r[i])
                        for i in range(len(head))).rstrip())
    print()
    print("ratio: median / median of the reference client of the same test and placement")
    print("  (smtp-source for a, b, c; curl for d; memcpy for e, median of per-run ratios;")
    print("  for f the fastest other client, for f-cpu and f-srv smtplib).")
    print("  Higher is better for msg/s and MB/s; lower is better for us/msg, RT/msg, s, MB.")
    for note in sys.argv[2:]:
        print(note)
    print("targets missed: %d" % missed)


if __name__ == "__main__":
    main()
