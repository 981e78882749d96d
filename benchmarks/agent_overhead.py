"""Agent overhead: CPU the agent costs an idle service, as a share of one core.

Two fresh processes run side by side for the same wall time: one with ``perfsdk.start()`` and all
built-in collectors and exporters at the given interval (the Prometheus endpoint on a free port,
the SQLite store in a temporary folder), one without. Each reports its own process CPU time
(user + system); the overhead is the difference over the wall time. The agent thread's own CPU
counter (``perfsdk_agent_cpu_seconds_total``) is shown too.

    python benchmarks/agent_overhead.py [--seconds 30] [--interval 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, os, sys, time, resource
    import perfsdk
    seconds, interval = float(sys.argv[1]), float(sys.argv[2])
    with_agent, db = sys.argv[3] == "1", sys.argv[4]

    @perfsdk.timed("bench_work_seconds")
    def work():
        pass

    agent = None
    if with_agent:
        agent = perfsdk.start(interval=interval, http_port=0, db_path=db)
    for _ in range(100):   # a few series worth exporting
        work()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = {"wall": wall, "cpu": cpu}
    if agent is not None:
        out["agent_thread_cpu"] = agent.cpu_seconds
        out["ticks"] = agent.ticks
        out["collectors"] = [c.name for c in agent.collectors]
        out["exporters"] = [e.name for e in agent.exporters]
    print(json.dumps(out))
    """
)


def run(seconds: float, interval: float, with_agent: bool, db: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(seconds), str(interval), "1" if with_agent else "0", db],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        on = run(args.seconds, args.interval, True, str(Path(tmp) / "perfsdk.db"))
        off = run(args.seconds, args.interval, False, "")
        res_on = json.loads(on.communicate()[0])
        res_off = json.loads(off.communicate()[0])
    extra = res_on["cpu"] - res_off["cpu"]
    share = 100.0 * extra / res_on["wall"]
    thread_share = 100.0 * res_on["agent_thread_cpu"] / res_on["wall"]
    print(
        f"agent at a {args.interval:g} s interval, {res_on['wall']:.1f} s wall, "
        f"{res_on['ticks']} ticks"
    )
    print(f"collectors: {', '.join(res_on['collectors']) or '-'}")
    print(f"exporters:  {', '.join(res_on['exporters']) or '-'}")
    print("| process        | CPU s  | % of one core |")
    print("| -------------- | -----: | ------------: |")
    print(f"| with agent     | {res_on['cpu']:.3f} | {100 * res_on['cpu'] / res_on['wall']:.3f} |")
    print(
        f"| without agent  | {res_off['cpu']:.3f} | {100 * res_off['cpu'] / res_off['wall']:.3f} |"
    )
    print(
        f"overhead: {share:.3f}% of one core (agent thread alone: {thread_share:.3f}%); "
        f"target <= 0.5%: {'met' if share <= 0.5 else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"on": res_on, "off": res_off, "overhead_pct": share}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
