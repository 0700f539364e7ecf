#!/usr/bin/env python3
"""Summarises the eye-bench JSON reports of one scripts/bench-ingest run as Markdown.

    bench-ingest-summary.py DIR            # scenarios: medians, ratios to the ceiling and the baseline, targets
    bench-ingest-summary.py --sweep DIR    # batching settings: landed events/s and p99
    bench-ingest-summary.py --spool DIR    # spool sync modes: latency, landed, syncs

Reports are DIR/<scenario>-<run>.json; a scenario's figures are the medians over its runs.
"""

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(directory):
    groups = defaultdict(list)
    for path in sorted(Path(directory).glob("*.json")):
        match = re.fullmatch(r"(.+)-(\d+)", path.stem)
        if not match:
            continue
        groups[match.group(1)].append(json.loads(path.read_text()))
    return groups


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def m(reports, getter):
    return median([getter(r) for r in reports])


def cpu(reports, name):
    def share(report):
        split = report["cpu_load"]
        if name == "other":
            return split["other"]["percent_of_core"]
        if name == "idle":
            return split["idle_percent_of_core"]
        for process in split["processes"]:
            if process["name"] == name:
                return process["percent_of_core"]
        return None

    return m(reports, share)


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def status_counts(reports):
    totals = defaultdict(list)
    for report in reports:
        for status, count in report["statuses"].items():
            totals[status].append(count)
    return ", ".join(f"{s}: {fmt(median(c))}" for s, c in sorted(totals.items()))


def scenarios(directory):
    groups = load(directory)
    order = [
        "single-ceiling",
        "single-baseline",
        "single-events",
        "batch100-ceiling",
        "batch100-baseline",
        "batch100-events",
        "overload",
    ]
    names = [n for n in order if n in groups] + sorted(set(groups) - set(order))
    out = []
    loads = [r["load_average_at_start"] for rs in groups.values() for r in rs]
    loads = [x for x in loads if x is not None]
    out.append(
        f"Runs per scenario: {max(len(rs) for rs in groups.values())}; medians shown. "
        "In the ceiling's rows, the \"eye\" CPU column is eye-ceiling's."
    )
    if loads:
        out.append(
            f"Load average at the start of the runs: {min(loads):.2f} to {max(loads):.2f} "
            f"(median {statistics.median(loads):.2f})."
        )
    if any(r.get("client_ids") for rs in groups.values() for r in rs):
        out.append(
            "Bodies as the shipped clients send them (BENCH_CLIENT_IDS=1): every event with "
            "its own event_id, and Prefer: return=minimal."
        )
    out.append("")
    out.append(
        "| scenario | conc. | req/s | accepted events/s | p50 µs | p99 µs | max µs "
        "| landed events/s | statuses (median count) | max RSS MiB | CPU % of a core: bench / eye / ClickHouse / other / idle |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for name in names:
        rs = groups[name]
        landed = m(rs, lambda r: r["landed"]["events_per_second"] if r["landed"] else None)
        # VmRSS sampled during the run: VmHWM is the peak over the process's whole life.
        rss = m(rs, lambda r: r["memory"]["max_sampled_rss_mib"] if r["memory"] else None)
        shares = " / ".join(
            fmt(cpu(rs, n)) for n in ["eye-bench", "the-eye", "devserver", "other", "idle"]
        )
        out.append(
            f"| {name} | {rs[0]['concurrency']} | {fmt(m(rs, lambda r: r['requests_per_second']))} "
            f"| {fmt(m(rs, lambda r: r['accepted_events_per_second']))} "
            f"| {fmt(m(rs, lambda r: r['latency']['p50_us']))} "
            f"| {fmt(m(rs, lambda r: r['latency']['p99_us']))} "
            f"| {fmt(m(rs, lambda r: r['latency']['max_us']))} "
            f"| {fmt(landed)} | {status_counts(rs)} | {fmt(rss, 1)} | {shares} |"
        )
    out.append("")

    def ratio(kind, field, base="baseline"):
        base = groups.get(f"{kind}-{base}")
        events = groups.get(f"{kind}-events")
        if not base or not events:
            return None
        return m(events, lambda r: r[field]) / m(base, lambda r: r[field])

    out.append(
        "CPU time per event, in µs (per request for single events), from /proc over each run "
        "until everything landed; medians:"
    )
    out.append("")
    out.append("| scenario | eye-bench | the-eye | devserver |")
    out.append("|---|---:|---:|---:|")
    for name in names:
        rs = groups[name]

        def per_event(process):
            def get(report):
                split = report.get("cpu_until_landed") or report["cpu_load"]
                events = report["landed"]["rows"] if report.get("landed") else report["events_accepted"]
                for p in split["processes"]:
                    if p["name"] == process and events:
                        return p["cpu_seconds"] / events * 1e6
                return None

            return m(rs, get)

        out.append(
            f"| {name} | {fmt(per_event('eye-bench'), 1)} | {fmt(per_event('the-eye'), 1)} "
            f"| {fmt(per_event('devserver'), 1)} |"
        )
    out.append("")

    out.extend(ratios(groups))
    out.append("")

    checks = []
    single = groups.get("single-events")
    r_single = ratio("single", "requests_per_second", "ceiling")
    if single and r_single is not None:
        p99 = m(single, lambda r: r["latency"]["p99_us"])
        ok = r_single >= 0.6 and p99 < 5_000
        checks.append(
            f"- single events, concurrency {single[0]['concurrency']}: {r_single:.0%} of the "
            f"ceiling's req/s (target ≥ 60%), p99 {fmt(p99)} µs (target < 5,000): "
            f"{'met' if ok else 'MISSED'}"
        )
    batch = groups.get("batch100-events")
    if batch:
        landed = m(batch, lambda r: r["landed"]["events_per_second"] if r["landed"] else None)
        checks.append(
            f"- batches of 100, concurrency {batch[0]['concurrency']}: {fmt(landed)} events/s "
            f"landed (target ≥ 150,000): {'met' if landed and landed >= 150_000 else 'MISSED'}"
        )
    over = groups.get("overload")
    if over:
        rss = max(r["memory"]["peak_rss_mib"] for r in over if r["memory"])
        full = sum(r["statuses"].get("503", 0) for r in over)
        complete = all(r["landed"] and r["landed"]["complete"] for r in over)
        checks.append(
            f"- overload (batches of 1000, concurrency {over[0]['concurrency']}): peak RSS "
            f"{rss:.1f} MiB (target < 300), {full:,} answers 503 over {len(over)} runs, every "
            f"accepted event landed: {complete}: "
            f"{'met' if rss < 300 and full > 0 and complete else 'MISSED'}"
        )
    if checks:
        out.append("Targets:")
        out.extend(checks)
    return "\n".join(out)


def ratios(groups):
    """The ratios of issue 14 as a ready Markdown table: per scenario, the ceiling (a separate
    minimal axum server), The Eye's in-service baseline route and its events route, medians."""

    def value(name, getter):
        rs = groups.get(name)
        return m(rs, getter) if rs else None

    def landed(r):
        return r["landed"]["events_per_second"] if r["landed"] else None

    def served_cpu(r):
        # CPU time of the served process (The Eye or eye-ceiling, `--pid`) per event until
        # everything landed: what the others on a shared machine take changes it little.
        split = r.get("cpu_until_landed") or r["cpu_load"]
        events = r["landed"]["rows"] if r.get("landed") else r["events_accepted"]
        for process in split["processes"]:
            if process["name"] == "the-eye" and events:
                return process["cpu_seconds"] / events * 1e6
        return None

    rows = [
        ("single", "req/s", lambda r: r["requests_per_second"]),
        ("single", "p99 µs", lambda r: r["latency"]["p99_us"]),
        ("single", "CPU µs per request (served process)", served_cpu),
        ("batch100", "accepted events/s", lambda r: r["accepted_events_per_second"]),
        ("batch100", "p99 µs", lambda r: r["latency"]["p99_us"]),
        ("batch100", "landed events/s", landed),
        ("batch100", "CPU µs per event (served process)", served_cpu),
    ]
    out = [
        "| scenario | figure | ceiling | in-service baseline | events | events / ceiling | events / baseline |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind, figure, getter in rows:
        if f"{kind}-events" not in groups:
            continue
        digits = 1 if "CPU" in figure else 0
        ceiling = value(f"{kind}-ceiling", getter)
        baseline = value(f"{kind}-baseline", getter)
        events = value(f"{kind}-events", getter)

        def share(base):
            if events is None or not base:
                return "–"
            # Latency as a factor (lower is better), rates as a share (higher is better).
            lower_is_better = "p99" in figure or "CPU" in figure
            return f"{events / base:.2f}×" if lower_is_better else f"{events / base:.0%}"

        out.append(
            f"| {kind} | {figure} | {fmt(ceiling, digits)} | {fmt(baseline, digits)} | {fmt(events, digits)} "
            f"| {share(ceiling)} | {share(baseline)} |"
        )
    return out


def sweep(directory):
    groups = load(directory)
    rows = []
    for name, rs in groups.items():
        match = re.fullmatch(r"sweep-rows(\d+)-ms(\d+)-(batch100|single)", name)
        if match:
            rows.append((int(match.group(1)), int(match.group(2)), match.group(3), rs))
    table = defaultdict(dict)
    for max_rows, interval, kind, rs in rows:
        table[(max_rows, interval)][kind] = rs
    out = [
        "| batch_max_rows | flush_interval_ms | batch100: landed events/s | accepted events/s "
        "| p99 µs | mean batch rows | mean flush ms | single: req/s | p99 µs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (max_rows, interval), kinds in sorted(table.items()):
        b = kinds.get("batch100", [])
        s = kinds.get("single", [])
        out.append(
            f"| {max_rows:,} | {interval} "
            f"| {fmt(m(b, lambda r: r['landed']['events_per_second']))} "
            f"| {fmt(m(b, lambda r: r['accepted_events_per_second']))} "
            f"| {fmt(m(b, lambda r: r['latency']['p99_us']))} "
            f"| {fmt(m(b, lambda r: r['landed']['mean_batch_rows']))} "
            f"| {fmt(m(b, lambda r: r['landed']['mean_flush_ms']), 1)} "
            f"| {fmt(m(s, lambda r: r['requests_per_second']))} "
            f"| {fmt(m(s, lambda r: r['latency']['p99_us']))} |"
        )
    return "\n".join(out)


def spool(directory):
    groups = load(directory)
    rows = []
    for name, rs in groups.items():
        match = re.fullmatch(r"spool-(.+)-(single|batch100)", name)
        if match:
            rows.append((match.group(2), match.group(1), rs))
    out = [
        "| scenario | spool_sync | conc. | req/s | accepted events/s | p50 µs | p99 µs "
        "| landed events/s | syncs/s | rows per sync | statuses (median count) "
        "| CPU % of a core: bench / eye / ClickHouse / other / idle |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    landed_by = {}
    for kind, sync, rs in sorted(rows, key=lambda row: (row[0] != "single", row[1])):
        landed = m(rs, lambda r: r["landed"]["events_per_second"] if r["landed"] else None)
        landed_by[(kind, sync)] = landed
        shares = " / ".join(
            fmt(cpu(rs, n)) for n in ["eye-bench", "the-eye", "devserver", "other", "idle"]
        )
        out.append(
            f"| {kind} | {sync} | {rs[0]['concurrency']} "
            f"| {fmt(m(rs, lambda r: r['requests_per_second']))} "
            f"| {fmt(m(rs, lambda r: r['accepted_events_per_second']))} "
            f"| {fmt(m(rs, lambda r: r['latency']['p50_us']))} "
            f"| {fmt(m(rs, lambda r: r['latency']['p99_us']))} "
            f"| {fmt(landed)} "
            f"| {fmt(m(rs, lambda r: r['landed'].get('spool_syncs_per_second') if r['landed'] else None))} "
            f"| {fmt(m(rs, lambda r: r['landed'].get('spool_rows_per_sync') if r['landed'] else None), 1)} "
            f"| {status_counts(rs)} | {shares} |"
        )
    out.append("")
    for kind in ["single", "batch100"]:
        on, off = landed_by.get((kind, "always")), landed_by.get((kind, "off"))
        if on and off:
            out.append(
                f"- {kind}: landed events/s with the spool (always) {on / off:.0%} of without "
                f"(target ≥ 90%)"
            )
    return "\n".join(out)


def main(argv):
    if len(argv) == 3 and argv[1] == "--sweep":
        print(sweep(argv[2]))
    elif len(argv) == 3 and argv[1] == "--spool":
        print(spool(argv[2]))
    elif len(argv) == 2:
        print(scenarios(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
