#!/usr/bin/env python3
"""Summarises one scripts/bench-instructions run (callgrind dumps of eye-instructions) as Markdown.

    bench-instructions-summary.py DIR [TOP]

DIR holds phases.json (written by eye-instructions) and callgrind.out.<dump>-<thread>, one file
per thread per dump (valgrind --tool=callgrind --separate-threads=yes). Thread 1 is the main
thread, which polls the requests; every other thread is background (runtime workers running
the batchers, spool feeders and the ClickHouse client; the spool writer thread). TOP (15) is how
many functions of the request path to list by inclusive instructions.
"""

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# Runtime and future plumbing, glue of the benchmark itself, and libc start-up: present in
# every request's stack, so their inclusive cost says nothing about The Eye's own work.
MACHINERY = re.compile(
    r"^(<core::pin::Pin|<core::future|core::ops::function|<F as |<futures_util::future|"
    r"<futures_core::|<tower::util::oneshot|<tower::util::map_|<tower::util::boxed|tokio::|"
    r"<tokio::|std::rt::|std::sys::backtrace|main$|\(below main\)|__libc_start|eye_instructions::|"
    r"<axum::util::MapIntoResponseFuture|<axum::routing::route::RouteFuture|0x[0-9a-f]+$|"
    r"std::panic::catch_unwind|std::panicking::|__rust_try|<core::panic::)"
)


def totals(directory):
    """{dump: {thread: (instructions, text of the file)}}"""
    counts = defaultdict(dict)
    for path in Path(directory).glob("callgrind.out.*-*"):
        match = re.fullmatch(r"callgrind\.out\.(\d+)-(\d+)", path.name)
        if not match:
            continue
        text = path.read_text(errors="replace")
        summary = re.search(r"^summary:\s*(\d+)", text, re.M)
        counts[int(match.group(1))][int(match.group(2))] = (
            int(summary.group(1)) if summary else 0,
            # The writer thread runs `pipeline::spool::writer::Writer::run` (the module path is
            # in the symbol; "spool::Writer" alone matched nothing, so its instructions were
            # counted as the runtime workers').
            "spool::writer::Writer" in text or "spool::Writer" in text,
        )
    return counts


def crate_of(function):
    """The crate a function's own instructions belong to, from its demangled name."""
    if function.startswith(("mi_", "_mi_")):
        return "mimalloc"
    if function.startswith("__rustc::"):
        return "alloc (Rust's allocator shim)"
    # `<Type as Trait>::f` belongs to Type's crate, unless Type is a bare generic parameter.
    for name in re.findall(r"([a-z_][a-z0-9_]*)::", function):
        return name
    return "libc and other C"


def top_functions(path, top, inclusive=True):
    output = subprocess.run(
        ["callgrind_annotate", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total = None
    rows = []
    for line in output.splitlines():
        match = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", line)
        if not match:
            continue
        cost = int(match.group(1).replace(",", ""))
        rest = match.group(3)
        if rest == "PROGRAM TOTALS":
            total = cost
            continue
        rest = re.sub(r" \[[^\]]*\]$", "", rest)
        split = re.match(r"^(\S*?\.(?:rs|c|h|S)|\?\?\?|[^:]*):(.*)$", rest)
        function = split.group(2) if split else rest
        # Recursion through a cycle ('2) counts the same instructions more than once.
        if re.search(r"'\d+$", function) or (total and cost > total):
            continue
        # The frames on the stack when the dump was taken (main, block_on, ...) show their
        # whole inclusive cost in the self listing as well: not their own.
        if not inclusive and total and cost == total:
            continue
        if inclusive and MACHINERY.match(function):
            continue
        rows.append((cost, function))
    # callgrind_annotate lists a function once per source file its instructions came from
    # (inlined code keeps its file). Self costs of those entries are disjoint: summed.
    # Inclusive ones overlap (an entry's calls may run through another's lines): the largest
    # is taken, a lower bound.
    merged = defaultdict(int)
    for cost, function in rows:
        merged[function] = merged[function] + cost if not inclusive else max(merged[function], cost)
    unique = sorted(((cost, function) for function, cost in merged.items()), key=lambda row: -row[0])
    return total, unique if top is None else unique[:top]


def table(out, rows, total, requests):
    out.append("| instructions per request | share of the request path | function |")
    out.append("|---:|---:|---|")
    for cost, function in rows:
        share = cost / total if total else 0
        name = function if len(function) <= 160 else function[:157] + "..."
        out.append(f"| {fmt(cost / requests)} | {share:.1%} | `{name}` |")


def fmt(value, digits=0):
    return f"{value:,.{digits}f}"


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[1])
    top = int(argv[2]) if len(argv) == 3 else 15
    segments = json.loads((directory / "phases.json").read_text())
    counts = totals(directory)
    phases = {}
    for segment in segments:
        threads = counts.get(segment["dump"])
        if threads is None:
            print(f"no callgrind dump {segment['dump']} in {directory}", file=sys.stderr)
            return 1
        phase = phases.setdefault(
            segment["phase"],
            {"requests": 0, "events": segment["events"], "main": 0, "spool": 0, "workers": 0, "wait": 0},
        )
        main_thread = threads.get(1, (0, False))[0]
        if segment["segment"] == "requests":
            phase["requests"] = segment["requests"]
            phase["main"] += main_thread
            phase["requests_dump"] = segment["dump"]
        else:
            phase["wait"] += main_thread
        for thread, (cost, spool_writer) in threads.items():
            if thread != 1:
                phase["spool" if spool_writer else "workers"] += cost
    for name, phase in phases.items():
        if phase["main"] == 0:
            print(f"{name}: no instructions counted on the main thread (not run under callgrind?)", file=sys.stderr)
            return 1

    out = [
        "Instructions counted by callgrind (`Ir`), per request and per event; request path = the "
        "thread that polls the requests (first request to last answer); background = every other "
        "thread from the first request until the last event landed (spool writer; runtime workers: "
        "batcher, spool feeder, RowBinary encoding and the HTTP insert to ClickHouse).",
        "",
        "| phase | requests | events | request path per request | request path per event "
        "| background per event: spool writer | runtime workers | total per event |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ["eye-single", "eye-batch100", "bare-single", "bare-batch100"]:
        phase = phases.get(name)
        if not phase:
            continue
        requests, events = phase["requests"], phase["events"]
        background = phase["spool"] + phase["workers"]
        out.append(
            f"| {name} | {fmt(requests)} | {fmt(events)} | {fmt(phase['main'] / requests)} "
            f"| {fmt(phase['main'] / events)} | {fmt(phase['spool'] / events)} "
            f"| {fmt(phase['workers'] / events)} | {fmt((phase['main'] + background) / events)} |"
        )
    out.append("")
    for kind, label in [("single", "single-event request"), ("batch100", "event in a batch of 100")]:
        eye, bare = phases.get(f"eye-{kind}"), phases.get(f"bare-{kind}")
        if eye and bare:
            per = (lambda p: p["main"] / p["requests"]) if kind == "single" else (lambda p: p["main"] / p["events"])
            ratio = per(eye) / per(bare)
            # Issue 34, item 5: a single-event request at most 3x the bare route's, an event
            # in a batch of 100 at most 1.5x.
            limit = 3.0 if kind == "single" else 1.5
            verdict = "met" if ratio <= limit else "MISSED"
            out.append(
                f"- request path per {label}: The Eye {fmt(per(eye))}, bare route {fmt(per(bare))}: "
                f"**{ratio:.2f}×** (target ≤ {limit:g}×): {verdict}"
            )
    out.append("")
    single = phases.get("eye-single")
    if single and "requests_dump" in single:
        path = directory / f"callgrind.out.{single['requests_dump']}-01"
        total, rows = top_functions(path, top)
        out.append(
            f"Top {len(rows)} functions of The Eye's single-event request path by inclusive "
            f"instructions (`callgrind_annotate --inclusive=yes {path.name}`; runtime and "
            "future plumbing left out), per request:"
        )
        out.append("")
        table(out, rows, total, single["requests"])
        total, rows = top_functions(path, None, inclusive=False)
        out.append("")
        out.append(f"Top {top} by self instructions (`--inclusive=no`), per request:")
        out.append("")
        table(out, rows[:top], total, single["requests"])
        crates = defaultdict(int)
        for cost, function in rows:
            crates[crate_of(function)] += cost
        listed = sum(crates.values())
        out.append("")
        out.append("Self instructions by crate (from the demangled names: a generic function counts under the crate that defines it, so `core` holds `drop_in_place` and iterators of every type), per request, shares of what is listed:")
        out.append("")
        out.append("| instructions per request | share | crate |")
        out.append("|---:|---:|---|")
        for crate, cost in sorted(crates.items(), key=lambda item: -item[1])[:top]:
            out.append(f"| {fmt(cost / single['requests'])} | {cost / listed:.1%} | {crate} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
