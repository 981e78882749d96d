"""Wall time of ``import perfsdk`` against ``import prometheus_client``, each in a fresh process.

Each run starts a new interpreter (``python -c``) that reads ``time.perf_counter()`` just before
and just after the import statement and prints the difference, so interpreter start-up is not
counted; the total wall time of the process (start-up included) is reported beside it. One
untimed run per module first writes the ``.pyc`` caches; then the modules alternate for 21 runs
each and the median is reported.

    python benchmarks/import_time.py [--json PATH] [--runs N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from _common import ROOT, machine_line, median, parser, table, write_json

MODULES = [
    "perfsdk",
    "prometheus_client",
    "opentelemetry.sdk.metrics",
    "ddsketch",
    "hdrh.histogram",
]
CODE = (
    "import time; t = time.perf_counter(); import {m}; d = time.perf_counter() - t; "
    "import sys; print(d, 'numpy' in sys.modules, 'numba' in sys.modules)"
)


def once(module: str, env: dict[str, str]) -> tuple[float, float, bool]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(m=module)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t
    d, numpy_loaded, numba_loaded = out.stdout.split()
    return float(d), wall, numpy_loaded == "True" or numba_loaded == "True"


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="runs per module (21)")
    args = ap.parse_args()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    modules = []
    for m in MODULES:
        try:
            once(m, env)  # writes .pyc files
            modules.append(m)
        except subprocess.CalledProcessError:
            print(f"skipped {m}: not importable")
    imports: dict[str, list[float]] = {m: [] for m in modules}
    walls: dict[str, list[float]] = {m: [] for m in modules}
    heavy: dict[str, bool] = {}
    for _ in range(args.runs):
        for m in modules:
            d, wall, loaded = once(m, env)
            imports[m].append(d)
            walls[m].append(wall)
            heavy[m] = heavy.get(m, False) or loaded
    baseline = median([once("sys", env)[1] for _ in range(args.runs)])
    rows = [
        [
            f"import {m}",
            f"{median(imports[m]) * 1e3:.1f}",
            f"{min(imports[m]) * 1e3:.1f}",
            f"{median(walls[m]) * 1e3:.1f}",
            "yes" if heavy[m] else "no",
        ]
        for m in modules
    ]
    print(machine_line())
    print(
        f"median of {args.runs} fresh processes each; interpreter start-up alone "
        f"(python -c 'import sys'): {baseline * 1e3:.1f} ms wall"
    )
    print(
        table(["statement", "import ms", "min ms", "process wall ms", "numpy/numba loaded"], rows)
    )
    if "perfsdk" in imports and "prometheus_client" in imports:
        p, q = median(imports["perfsdk"]), median(imports["prometheus_client"])
        verdict = "faster" if p <= q else "SLOWER"
        print(f"import perfsdk is {verdict} than import prometheus_client ({p / q:.2f}x its time)")
    write_json(
        args.json,
        {
            "benchmark": "import_time",
            "startup_wall_seconds": baseline,
            "results": [
                {
                    "module": m,
                    "import_seconds": imports[m],
                    "process_wall_seconds": walls[m],
                    "median_import_seconds": median(imports[m]),
                    "loads_numpy_or_numba": heavy[m],
                }
                for m in modules
            ],
        },
    )


if __name__ == "__main__":
    main()
