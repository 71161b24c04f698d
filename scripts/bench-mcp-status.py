#!/usr/bin/env python3
"""MCP `status` latency benchmark: a status call on a run of 32 tasks, from a real client (the Python MCP SDK).

Target: p50 <= 5 ms and p99 <= 20 ms over 1,000 calls.

    PYTHONPATH=.tools/mcp-py python3 scripts/bench_mcp_status.py --ccfan target/release/ccfan \
        [--calls 1000] [--tasks 32] [--transport stdio|http]

Builds a throw-away git repository in a temp dir (a ccfan.toml whose default worker is a command, kept outside the
repository, that writes `src/<task id>.txt`; worktrees in a temp folder outside the repository), starts
`ccfan -C REPO mcp` (stdio, or `--http 127.0.0.1:0` for http), delegates the tasks (each allowed only its own file,
so all are accepted), waits for the run with `status` wait_seconds, then times `status` calls (no wait) one after
another with time.perf_counter around each call_tool (after a few untimed warm-up calls), then as many pings (the
client's and transport's own floor, for comparison). Prints a Markdown table of p50/p90/p99/max/mean in milliseconds
and the machine; exits 1 if status's p50 > 5 ms or p99 > 20 ms (2 if the benchmark could not run).
Needs only the MCP SDK (if it is not importable, the repository's .tools/mcp-py is tried).
"""
import argparse
import asyncio
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

try:
    import mcp  # noqa: F401
except ImportError:  # fall back to the SDK vendored in the repository (scripts/../.tools/mcp-py)
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.normpath(os.path.join(_here, "..", ".tools", "mcp-py")))

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

# The HTTP server wrapper is the conformance client's (one copy).
sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "mcp")))
from conformance import HttpServer  # noqa: E402

try:
    from mcp.client.streamable_http import streamable_http_client as _http_client
except ImportError:  # older SDK name
    from mcp.client.streamable_http import streamablehttp_client as _http_client

P50_TARGET_MS = 5.0
P99_TARGET_MS = 20.0
WORKER = """#!/bin/sh
# ccfan benchmark worker: a trivial change to this task's own file.
echo "change from $CCFAN_TASK_ID" > "src/$CCFAN_TASK_ID.txt"
"""


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def git(repo, *args):
    subprocess.run(["git", "-C", repo, *args], check=True, stdout=subprocess.DEVNULL)


def make_repo(root):
    """A throw-away repository with a command worker; returns its path."""
    repo = os.path.join(root, "repo")
    worker = os.path.join(root, "worker.sh")
    worktrees = os.path.join(root, "worktrees")
    os.makedirs(os.path.join(repo, "src"))
    with open(worker, "w") as f:
        f.write(WORKER)
    os.chmod(worker, 0o755)
    with open(os.path.join(repo, "README.md"), "w") as f:
        f.write("ccfan MCP status benchmark (throw-away)\n")
    with open(os.path.join(repo, "src", ".keep"), "w") as f:
        f.write("")
    with open(os.path.join(repo, "ccfan.toml"), "w") as f:
        f.write(f'[run]\nworker = "default"\nworktree_root = "{worktrees}"\n\n'
                f'[workers.default]\nkind = "command"\ncommand = ["{worker}"]\n')
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    git(repo, "config", "user.name", "ccfan bench")
    git(repo, "config", "user.email", "bench@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "benchmark repository")
    return repo


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def bench(read, write, opts):
    async with ClientSession(read, write) as s:
        await s.initialize()
        ids = [f"t{i:02d}" for i in range(1, opts.tasks + 1)]
        tasks = [{"id": i, "goal": f"Write src/{i}.txt.", "allowed": [f"src/{i}.txt"]} for i in ids]
        args = {"tasks": tasks, "client_request_id": "bench-status"}
        if opts.jobs:
            args["jobs"] = opts.jobs
        res = await s.call_tool("delegate", args, read_timeout_seconds=120)
        if res.is_error:
            raise BenchError(f"delegate failed: {res.structured_content}")
        run_id = res.structured_content["run_id"]
        log(f"delegated {len(ids)} tasks as run {run_id}; waiting for it")

        start = time.monotonic()
        while True:
            res = await s.call_tool("status", {"run_id": run_id, "wait_seconds": 30}, read_timeout_seconds=90)
            if res.is_error:
                raise BenchError(f"status failed: {res.structured_content}")
            st = res.structured_content
            if st["done"]:
                break
            if time.monotonic() - start > opts.run_timeout:
                raise BenchError(f"run {run_id} not done after {opts.run_timeout:.0f} s: counts {st['counts']}")
        if len(st["tasks"]) != len(ids):
            raise BenchError(f"status lists {len(st['tasks'])} tasks, expected {len(ids)}")
        log(f"run done after {time.monotonic() - start:.1f} s: {st['counts']}")
        if st["counts"].get("accepted", 0) != len(ids):
            log(f"warning: not every task was accepted: {st['counts']}")

        args = {"run_id": run_id}
        for _ in range(opts.warmup):
            await s.call_tool("status", args)
        times = []
        for _ in range(opts.calls):
            t0 = time.perf_counter()
            res = await s.call_tool("status", args)
            times.append((time.perf_counter() - t0) * 1000.0)
            if res.is_error or len(res.structured_content["tasks"]) != len(ids):
                raise BenchError(f"status returned an unexpected result: {res.structured_content}")
        # The floor: the same client and transport answering a ping (no tool, no state read).
        pings = []
        for _ in range(opts.calls):
            t0 = time.perf_counter()
            await s.send_ping()
            pings.append((time.perf_counter() - t0) * 1000.0)
        return run_id, st["counts"], times, pings


async def run(opts, repo):
    if opts.transport == "stdio":
        params = StdioServerParameters(command=opts.ccfan, args=["-C", repo, "mcp"])
        async with stdio_client(params) as (read, write):
            return await bench(read, write, opts)
    server = HttpServer(opts.ccfan, repo)
    try:
        url = server.wait_url()
        log(f"http server at {url}")
        async with _http_client(url) as streams:
            return await bench(streams[0], streams[1], opts)
    finally:
        server.stop()


def machine(ccfan):
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    version = subprocess.run([ccfan, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        from importlib.metadata import version as pkg_version
        sdk = pkg_version("mcp")
    except Exception:  # noqa: BLE001
        sdk = "?"
    return {"nproc": nproc, "cpu": cpu, "python": platform.python_version(), "ccfan": version, "sdk": sdk}


def first_error(exc):
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        for inner in exc.exceptions:
            found = first_error(inner)
            if isinstance(found, BenchError):
                return found
        return first_error(exc.exceptions[0])
    return exc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ccfan", required=True, help="the ccfan binary (a release build for real figures)")
    ap.add_argument("--calls", type=int, default=1000, help="timed status calls (default 1000)")
    ap.add_argument("--tasks", type=int, default=32, help="tasks in the run (default 32)")
    ap.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    ap.add_argument("--warmup", type=int, default=10, help="untimed status calls first (default 10)")
    ap.add_argument("--jobs", type=int, default=None, help="tasks at a time for the run (default: ccfan's)")
    ap.add_argument("--run-timeout", type=float, default=600, help="seconds the run may take (default 600)")
    ap.add_argument("--keep", action="store_true", help="keep the temp repository (its path is printed)")
    opts = ap.parse_args()
    opts.ccfan = os.path.abspath(opts.ccfan) if os.sep in opts.ccfan else (shutil.which(opts.ccfan) or opts.ccfan)
    if opts.calls < 1 or opts.tasks < 1:
        ap.error("--calls and --tasks must be at least 1")

    root = tempfile.mkdtemp(prefix="ccfan-bench-mcp-")
    try:
        repo = make_repo(root)
        log(f"repository {repo}; server: {opts.ccfan} -C {repo} mcp"
            + (" --http 127.0.0.1:0" if opts.transport == "http" else " (stdio)"))
        run_id, counts, times, pings = asyncio.run(run(opts, repo))
    except BaseException as exc:  # noqa: BLE001 - one clear line for any failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        exc = first_error(exc)
        print(f"FAIL: benchmark did not complete: {type(exc).__name__}: {exc}", flush=True)
        return 2
    finally:
        if opts.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    times.sort()
    pings.sort()
    p50, p90, p99 = (percentile(times, p) for p in (50, 90, 99))
    m = machine(opts.ccfan)
    print(f"### ccfan MCP `status` latency ({opts.transport}, run of {opts.tasks} tasks, {opts.calls} calls)\n")
    print("| call | p50 ms | p90 ms | p99 ms | max ms | mean ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, xs in (("status", times), ("ping (client + transport floor)", pings)):
        row = " | ".join(f"{percentile(xs, p):.2f}" for p in (50, 90, 99))
        print(f"| {name} | {row} | {xs[-1]:.2f} | {statistics.fmean(xs):.2f} |")
    print()
    print("| machine | |")
    print("|---|---|")
    print(f"| nproc | {m['nproc']} |")
    print(f"| cpu | {m['cpu']} |")
    print(f"| python | {m['python']} (mcp SDK {m['sdk']}) |")
    print(f"| ccfan | {m['ccfan']} ({opts.ccfan}) |")
    print(f"| run | {run_id}: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))} |\n")

    failed = []
    if p50 > P50_TARGET_MS:
        failed.append(f"p50 {p50:.2f} ms > {P50_TARGET_MS:g} ms")
    if p99 > P99_TARGET_MS:
        failed.append(f"p99 {p99:.2f} ms > {P99_TARGET_MS:g} ms")
    if failed:
        print(f"FAIL: target missed: {'; '.join(failed)} (target: p50 <= {P50_TARGET_MS:g} ms, "
              f"p99 <= {P99_TARGET_MS:g} ms)")
        return 1
    print(f"PASS: p50 {p50:.2f} ms <= {P50_TARGET_MS:g} ms and p99 {p99:.2f} ms <= {P99_TARGET_MS:g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
