#!/usr/bin/env python3
"""Helpers for bench/run: scenarios, probes, wrk and pgbench parsing, profiles and the report.

Only the Python 3 standard library (3.9 or later). bench/run calls the sub-commands below;
nothing here starts or stops a process.

To add a scenario, add one entry to SCENARIOS (an id, a method, a path, a body generator or None,
the pgbench ceiling it is compared with, and whether a default run includes it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

# --------------------------------------------------------------------------------------------
# Scenarios

# The key written by setSetting, the REST write and the pgbench write ceilings. Not a catalog
# key: the built-in catalog declares `theme` a string of at most 20 characters, so an object
# value there is refused (every request would count as an error). `appearance` is free-form and
# takes the small object clients store there.
WRITE_KEY = "appearance"

ACCENTS = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6", "#64748b"]
MODES = ["dark", "light", "system"]


def appearance(i: int) -> dict:
    return {
        "mode": MODES[i % 3],
        "accent": ACCENTS[i % len(ACCENTS)],
        "fontScale": round(1.0 + (i % 5) * 0.1, 1),
    }


def gql(query: str, variables: Optional[dict] = None) -> dict:
    body = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return body


SETTINGS_QUERY = "{ settings { key value version updatedAt } }"
# Keys that bench/seed.sql gives every user, for the `keys:` variants of the read.
SEEDED_KEYS = ["appearance", "dashboardLayout", "digestMode", "editor", "locale",
               "notificationPrefs", "notifications", "privacy", "recentSearches", "theme"]
SETTINGS_KEYS_QUERY = "query($k: [String!]) { settings(keys: $k) { key value version updatedAt } }"
SET_SETTING = 'mutation($v: JSON!) { setSetting(key: "%s", value: $v) { version } }' % WRITE_KEY
UPDATE_SETTINGS = "mutation($p: JSON!) { updateSettings(patch: $p) { key version } }"


def five_key_patch(i: int) -> dict:
    # Two catalog keys (schema-checked on write) and three free-form keys; objects are merged
    # into the stored objects (RFC 7386), the rest replaces. No `locale`: it would add the
    # mirror UPDATE of the users row, which is not the common case.
    return {
        "theme": MODES[i % 3],
        "emailNotifications": i % 2 == 0,
        "appearance": {"accent": ACCENTS[i % len(ACCENTS)]},
        "notificationPrefs": {"push": {"enabled": i % 3 != 0}},
        "recentSearches": [f"query {i % 97}", f"query {(i * 7) % 97}", "settings"],
    }


def keys_read(count: int) -> Callable[[int], dict]:
    return lambda i: gql(SETTINGS_KEYS_QUERY, {"k": SEEDED_KEYS[:count]})


@dataclass(frozen=True)
class Scenario:
    id: str
    method: str
    path: str
    body: Optional[Callable[[int], dict]]
    ceiling: str  # "read" or "upsert": the pgbench run it is compared with
    label: str
    default: bool = True  # part of a run without BENCH_SCENARIOS


SCENARIOS = [
    Scenario("gql-settings", "POST", "/graphql", lambda i: gql(SETTINGS_QUERY), "read",
             "GraphQL settings (20 keys)"),
    Scenario("rest-read", "GET", "/api/v1/users/me/settings", None, "read", "REST GET settings"),
    Scenario("gql-setSetting", "POST", "/graphql",
             lambda i: gql(SET_SETTING, {"v": appearance(i)}), "upsert", "GraphQL setSetting"),
    Scenario("gql-updateSettings", "POST", "/graphql",
             lambda i: gql(UPDATE_SETTINGS, {"p": five_key_patch(i)}), "upsert",
             "GraphQL updateSettings (5 keys)"),
    Scenario("rest-write", "PUT", f"/api/v1/users/me/settings/{WRITE_KEY}",
             lambda i: {"value": appearance(i)}, "upsert", f"REST PUT settings/{WRITE_KEY}"),
    # Not in a default run: the cost of a read by the number of keys read.
    Scenario("gql-settings-k1", "POST", "/graphql", keys_read(1), "read",
             "GraphQL settings (keys: 1)", default=False),
    Scenario("gql-settings-k5", "POST", "/graphql", keys_read(5), "read",
             "GraphQL settings (keys: 5)", default=False),
    Scenario("gql-settings-k10", "POST", "/graphql", keys_read(10), "read",
             "GraphQL settings (keys: 10)", default=False),
]

CEILINGS = {
    "read": "pgbench read (the settings SELECT, 20 rows)",
    "upsert": "pgbench upsert (1 row, autocommit)",
    "txn": "pgbench write txn (the service's 5 round trips)",
}

BODY_VARIANTS = 16


def by_id(scenario_id: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.id == scenario_id:
            return scenario
    known = ", ".join(s.id for s in SCENARIOS)
    sys.exit(f"bench.py: unknown scenario `{scenario_id}` (known: {known})")


def selected() -> list[Scenario]:
    wanted = [s.strip() for s in os.environ.get("BENCH_SCENARIOS", "").split(",") if s.strip()]
    if not wanted:
        return [s for s in SCENARIOS if s.default]
    if wanted == ["all"]:
        return SCENARIOS
    if wanted == ["none"]:
        return []
    return [by_id(s) for s in wanted]


def cmd_list(args) -> None:
    for scenario in selected():
        if args.ceiling is None or scenario.ceiling == args.ceiling:
            print(scenario.id)


def bodies_of(scenario: Scenario) -> list:
    """The scenario's distinct request bodies in the order wrk.lua takes them (none for GET)."""
    if scenario.body is None:
        return []
    return sorted({json.dumps(scenario.body(i), separators=(",", ":")) for i in range(BODY_VARIANTS)})


def cmd_spec(args) -> None:
    """Writes the file wrk.lua reads: method, path, then one body per line (none for GET)."""
    scenario = by_id(args.scenario)
    lines = [scenario.method, scenario.path] + bodies_of(scenario)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Probe: one request of a scenario before it is run.


def cmd_probe(args) -> None:
    """Prints `ok`, `404`, or `fail <status> <body>`; exits 0 for ok and 404."""
    scenario = by_id(args.scenario)
    with open(args.tokens) as f:
        token = f.readline().strip()
    data = None
    headers = {"Authorization": f"Bearer {token}"}
    if scenario.body is not None:
        data = json.dumps(scenario.body(0)).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(args.url + scenario.path, data=data, headers=headers,
                                     method=scenario.method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode(errors="replace")
    except OSError as err:
        print(f"fail 0 {err}")
        sys.exit(1)
    if status == 404:
        print("404")
    elif 200 <= status < 300 and not has_graphql_errors(body):
        print("ok")
    else:
        print(f"fail {status} {' '.join(body.split())[:300]}")
        sys.exit(1)


def cmd_drive(args) -> None:
    """Sends `count` requests of a scenario one after another on one connection, the users and
    bodies in the order wrk.lua takes them; exits 1 at the first bad response."""
    import http.client
    import urllib.parse

    scenario = by_id(args.scenario)
    with open(args.tokens) as f:
        tokens = [line.strip() for line in f if line.strip()]
    bodies = bodies_of(scenario) or [None]
    url = urllib.parse.urlsplit(args.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    for j in range(args.offset, args.offset + args.count):
        headers = {"Authorization": f"Bearer {tokens[j % len(tokens)]}"}
        body = bodies[(j // len(tokens)) % len(bodies)]
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(scenario.method, scenario.path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        if not 200 <= response.status < 300 or has_graphql_errors(text):
            sys.exit(f"bench.py drive: {scenario.id} answered {response.status}: {text[:300]}")


def has_graphql_errors(body: str) -> bool:
    """The test wrk.lua applies to every 2xx response body."""
    return '"errors":' in body


# --------------------------------------------------------------------------------------------
# Parsing wrk and pgbench output into result lines (JSON, one per run)


def cmd_wrk_result(args) -> None:
    scenario = by_id(args.scenario)
    text = open(args.output, errors="replace").read()
    match = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.M)
    if not match:
        sys.exit(f"bench.py: no BENCH_RESULT line in the wrk output:\n{text[-2000:]}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    requests = raw["requests"]
    result = {
        "scenario": scenario.id,
        "label": scenario.label,
        "kind": "service",
        "method": scenario.method,
        "path": scenario.path,
        "ceiling": scenario.ceiling,
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "errors": raw["errors"] + raw["socket_errors"],
        "errors_detail": {
            "non_2xx": raw["status_errors"],
            "graphql_errors": raw["errors"] - raw["status_errors"],
            "socket": raw["socket_errors"],
            "first_bad_status": raw.get("first_bad_status") or None,
            "first_bad_body": raw.get("first_bad_body") or None,
        },
        "response_bytes_mean": round(raw["bytes"] / requests) if requests else None,
        "rss_after_kib": args.rss_kib,
        # CPU time the server process used during the run (wrk, PostgreSQL and the server share
        # the machine's cores), and per request.
        "server_cpu_seconds": args.cpu_seconds,
        "server_cpu_us_per_request":
            round(args.cpu_seconds * 1e6 / requests, 1) if requests else None,
        "postgres_cpu_seconds": args.pg_cpu_seconds,
        "postgres_cpu_us_per_request":
            round(args.pg_cpu_seconds * 1e6 / requests, 1)
            if requests and args.pg_cpu_seconds is not None else None,
    }
    print(json.dumps(result))


def cmd_summary(args) -> None:
    """One line about one result line, for the log."""
    r = json.loads(args.result)
    unit = "tps" if r["kind"] == "ceiling" else "req/s"
    text = f"{r['rps']:.0f} {unit}, p99 {fmt_ms(r.get('p99_ms'))} ms, {r['errors']} errors"
    detail = r.get("errors_detail", {})
    if r["errors"] and detail.get("first_bad_status") is not None:
        text += f" (first: {detail['first_bad_status']} {detail.get('first_bad_body') or ''})"
    print(text)


def cmd_skipped(args) -> None:
    scenario = by_id(args.scenario)
    print(json.dumps({
        "scenario": scenario.id,
        "label": scenario.label,
        "kind": "service",
        "method": scenario.method,
        "path": scenario.path,
        "ceiling": scenario.ceiling,
        "skipped": args.reason,
    }))


def percentile(sorted_values: list[int], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


def cmd_pgbench_result(args) -> None:
    text = open(args.output).read()

    def grab(pattern: str, default=None):
        m = re.search(pattern, text, re.M)
        return m.group(1) if m else default

    tps = grab(r"^tps = ([0-9.]+) \(without initial connection time\)")
    if tps is None:
        sys.exit(f"bench.py: no tps in the pgbench output:\n{text[-2000:]}")
    avg = float(grab(r"^latency average = ([0-9.]+) ms", "0"))
    failed = int(grab(r"^number of failed transactions: (\d+)", "0"))
    processed = int(grab(r"^number of transactions actually processed: (\d+)", "0"))
    aborted = len(re.findall(r"^pgbench: error: client \d+ (?:script \d+ )?aborted", text, re.M))
    # Sampled per-transaction log (pgbench -l --sampling-rate): the latency is the 3rd field, µs.
    latencies = []
    for path in glob.glob(args.log_prefix + ".*"):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    latencies.sort()
    result = {
        "scenario": f"pgbench-{args.name}",
        "label": CEILINGS[args.name],
        "kind": "ceiling",
        "ceiling": args.name,
        "requests": processed,
        "rps": float(tps),
        "mean_ms": avg,
        "p50_ms": percentile(latencies, 50) / 1000 if latencies else None,
        "p99_ms": percentile(latencies, 99) / 1000 if latencies else None,
        "latency_samples": len(latencies),
        "errors": failed + aborted,
        "errors_detail": {"failed": failed, "aborted_clients": aborted},
        "postgres_cpu_seconds": args.pg_cpu_seconds,
        "postgres_cpu_us_per_request":
            round(args.pg_cpu_seconds * 1e6 / processed, 1)
            if processed and args.pg_cpu_seconds is not None else None,
    }
    print(json.dumps(result))


def cmd_pg_cpu(args) -> None:
    """Prints the CPU seconds (user + system) PostgreSQL has used: every live `postgres` process,
    plus what the postmaster collected from its exited children (pgbench's backends)."""
    procs = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(path).read()
        except OSError:
            continue
        pid = int(path.split("/")[2])
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is the state (field 3 of stat); utime is field 14, so fields[11].
        procs[pid] = (comm, int(fields[1]), [int(x) for x in fields[11:15]])
    ticks = 0
    for comm, ppid, (utime, stime, cutime, cstime) in procs.values():
        if comm != "postgres":
            continue
        ticks += utime + stime
        if procs.get(ppid, ("",))[0] != "postgres":
            ticks += cutime + cstime
    print(f"{ticks / os.sysconf('SC_CLK_TCK'):.2f}")


# --------------------------------------------------------------------------------------------
# Profiles: perf report output summarised by crate.

CRATE_RE = re.compile(r"^(?:<|_<)?([A-Za-z_][A-Za-z0-9_]*)::")


def crate_of(symbol: str, dso: str) -> str:
    if symbol.startswith("[k] ") or dso == "[kernel.kallsyms]":
        return "kernel"
    name = symbol[4:] if symbol[:4] in ("[.] ", "[k] ") else symbol
    match = CRATE_RE.match(name.strip())
    if match:
        crate = match.group(1)
        return "std" if crate in ("core", "alloc", "std") else crate
    if dso and not dso.startswith("settings-api"):
        return dso  # libc and other shared objects
    if name.startswith("0x"):
        return "unresolved"
    return "other (" + name.strip()[:40] + ")"


def cmd_perf_crates(args) -> None:
    """Reads `perf report --no-children --sort dso,symbol -g none --stdio` and prints the self
    time by crate (the part of a Rust symbol before `::`), kernel and shared objects."""
    totals: dict[str, float] = {}
    line_re = re.compile(r"^\s+([0-9.]+)%\s+(\S+)\s+(\[[.k]\] .*)$")
    for line in open(args.report):
        match = line_re.match(line)
        if not match:
            continue
        pct, dso, symbol = float(match.group(1)), match.group(2), match.group(3)
        crate = crate_of(symbol, dso)
        totals[crate] = totals.get(crate, 0.0) + pct
    for crate, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        if pct >= args.min:
            print(f"{pct:6.2f}%  {crate}")


# --------------------------------------------------------------------------------------------
# Report

# The targets, checked on every report.
TARGET_RATIO = 0.5
TARGET_P99_MS = 20.0
TARGET_RSS_MIB = 64.0


def fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def cmd_report(args) -> None:
    results = [json.loads(line) for line in open(args.results) if line.strip()]
    meta = json.loads(open(args.meta).read())
    ceilings = {r["ceiling"]: r for r in results if r["kind"] == "ceiling"}

    def ratio(r: dict, ceiling: str):
        top = ceilings.get(ceiling, {}).get("rps")
        return round(r["rps"] / top, 4) if top else None

    for r in results:
        if r["kind"] == "service" and "rps" in r:
            r["ratio_to_ceiling"] = ratio(r, r["ceiling"])
            if r["ceiling"] == "upsert":
                r["ratio_to_write_txn"] = ratio(r, "txn")

    def pct(value) -> str:
        return "-" if value is None else f"{value * 100:.1f}%"

    headers = ["run", "req/s", "p50 ms", "p99 ms", "errors", "vs ceiling", "vs write txn",
               "server CPU/req", "PG CPU/req"]
    right = {1, 2, 3, 4, 7, 8}
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append([r["label"], f"skipped: {r['skipped']}"])
            continue
        pg_cpu = r.get("postgres_cpu_us_per_request")
        pg_cpu = "-" if pg_cpu is None else f"{pg_cpu:.0f} µs"
        if r["kind"] == "ceiling":
            versus, versus_txn, cpu = "(ceiling)", "", ""
        else:
            versus = r.get("ratio_to_ceiling")
            versus = "-" if versus is None else f"{pct(versus)} of {r['ceiling']}"
            versus_txn = pct(r.get("ratio_to_write_txn")) if r["ceiling"] == "upsert" else ""
            per_request = r.get("server_cpu_us_per_request")
            cpu = "-" if per_request is None else f"{per_request:.0f} µs"
        rows.append([r["label"], f"{r['rps']:.0f}", fmt_ms(r.get("p50_ms")),
                     fmt_ms(r.get("p99_ms")), str(r["errors"]), versus, versus_txn, cpu, pg_cpu])
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) == len(headers):
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    widths[0] = max(len(row[0]) for row in rows + [headers])

    def line(cells) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i in right and len(cells) == len(headers):
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rss = meta.get("server_rss", {})
    peak_mib = max(rss.get("vmhwm_kib", 0), rss.get("polled_max_kib", 0)) / 1024
    out = [
        "",
        f"settings-api benchmark  {meta['timestamp']}  commit {meta['commit']}  "
        f"backend {meta.get('backend', 'postgres')}",
        f"{meta['users']} users x {meta['keys_per_user']} keys, {meta['tokens']} tokens, "
        f"{meta['connections']} connections, {meta['threads']} wrk threads, "
        f"{meta['duration']} per run, service DB pool {meta['database_max_connections']}, "
        f"{meta['host']['cpus']} CPUs, load {meta['host']['loadavg_before']} before",
        "",
        line(headers),
        line(["-" * w for w in widths]),
    ]
    out += [line(row) for row in rows]
    out += [
        "",
        f"server peak RSS: {peak_mib:.1f} MiB"
        f" (VmHWM {rss.get('vmhwm_kib', 0) / 1024:.1f} MiB,"
        f" max polled VmRSS {rss.get('polled_max_kib', 0) / 1024:.1f} MiB,"
        f" {rss.get('idle_kib', 0) / 1024:.1f} MiB idle before the runs)",
    ]

    # The targets, for what this run measured.
    checks = []
    by_scenario = {r["scenario"]: r for r in results if r["kind"] == "service" and "rps" in r}
    for sid, ceiling in (("gql-settings", "read"), ("gql-setSetting", "upsert")):
        r = by_scenario.get(sid)
        if r and r.get("ratio_to_ceiling") is not None:
            checks.append((f"{sid} >= {TARGET_RATIO:.0%} of the pgbench {ceiling} ceiling",
                           r["ratio_to_ceiling"] >= TARGET_RATIO, pct(r["ratio_to_ceiling"])))
    measured = list(by_scenario.values())
    if measured:
        errors = sum(r["errors"] for r in measured)
        checks.append(("0 errors", errors == 0, str(errors)))
        worst = max(measured, key=lambda r: r["p99_ms"])
        checks.append((f"p99 <= {TARGET_P99_MS:.0f} ms", worst["p99_ms"] <= TARGET_P99_MS,
                       f"worst {worst['p99_ms']:.2f} ms ({worst['scenario']})"))
        checks.append((f"server RSS <= {TARGET_RSS_MIB:.0f} MiB", peak_mib <= TARGET_RSS_MIB,
                       f"{peak_mib:.1f} MiB"))
    if checks:
        out += ["", "targets:"]
        width = max(len(c[0]) for c in checks)
        out += [f"  {'met ' if ok else 'MISS'}  {name.ljust(width)}  {value}"
                for name, ok, value in checks]
    print("\n".join(out))

    report = dict(meta)
    report["results"] = results
    report["targets"] = [{"target": n, "met": ok, "value": v} for n, ok, v in checks]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"written: {os.path.relpath(args.out)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list")
    p.add_argument("--ceiling", choices=["read", "upsert"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("spec")
    p.add_argument("scenario")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_spec)

    p = sub.add_parser("probe")
    p.add_argument("scenario")
    p.add_argument("--url", required=True)
    p.add_argument("--tokens", required=True)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("drive")
    p.add_argument("scenario")
    p.add_argument("--url", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_drive)

    p = sub.add_parser("wrk-result")
    p.add_argument("scenario")
    p.add_argument("--output", required=True)
    p.add_argument("--rss-kib", type=int, default=None)
    p.add_argument("--cpu-seconds", type=float, default=None)
    p.add_argument("--pg-cpu-seconds", type=float, default=None)
    p.set_defaults(func=cmd_wrk_result)

    p = sub.add_parser("summary")
    p.add_argument("result")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("skipped")
    p.add_argument("scenario")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_skipped)

    p = sub.add_parser("pgbench-result")
    p.add_argument("name")
    p.add_argument("--output", required=True)
    p.add_argument("--log-prefix", required=True)
    p.add_argument("--pg-cpu-seconds", type=float, default=None)
    p.set_defaults(func=cmd_pgbench_result)

    p = sub.add_parser("pg-cpu")
    p.set_defaults(func=cmd_pg_cpu)

    p = sub.add_parser("perf-crates")
    p.add_argument("report")
    p.add_argument("--min", type=float, default=0.5)
    p.set_defaults(func=cmd_perf_crates)

    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
