"""``perfsdk run``: options to environment, the bootstrap, exit codes, signals, a live agent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import perfsdk.run_cli  # noqa: F401  (registers `perfsdk run`; cli.py imports it too)
from perfsdk.cli import main
from perfsdk.errors import ConfigError
from perfsdk.run_cli import BOOTSTRAP_ENV, build_environment, exit_status, parse_options

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP_DIR = str(REPO / "perfsdk" / "_bootstrap")
CONFIG_KEYS = (
    "INTERVAL",
    "HTTP_ENABLED",
    "HTTP_HOST",
    "HTTP_PORT",
    "JSONL_PATH",
    "STORE_ENABLED",
    "DB_PATH",
    "MULTIPROCESS_DIR",
    "DISABLED_COLLECTORS",
)

# A target program: prints a line to say it is ready (its handlers are installed), then waits.
APP = textwrap.dedent(
    """
    import os, signal, sys, time
    import perfsdk

    @perfsdk.timed("run_cli_app_seconds", labels={"step": "work"})
    def work():
        time.sleep(0.001)

    def on_signal(signum, frame):
        print(f"handled {signal.Signals(signum).name}", flush=True)
        sys.exit(7)

    if "--handle" in sys.argv:
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            signal.signal(getattr(signal, name), on_signal)
    for _ in range(25):
        work()
    agent = perfsdk.get_agent()
    print("ready", os.getpid(), "agent" if agent is not None else "no-agent", flush=True)
    if "--wait" in sys.argv:
        time.sleep(60)
    """
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in CONFIG_KEYS:
        monkeypatch.delenv(f"PERFSDK_{key}", raising=False)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP, encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(*prepend: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.removeprefix("PERFSDK_") not in CONFIG_KEYS}
    paths = [*map(str, prepend), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def launcher(tmp_path: Path, *options: str) -> list[str]:
    """``python -m perfsdk run`` with the endpoint on a free port and the store in tmp_path."""
    return [
        sys.executable,
        "-m",
        "perfsdk",
        "run",
        "--port",
        str(free_port()),
        "--db",
        str(tmp_path / "perfsdk.db"),
        *options,
    ]


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; killed if the test did not stop them."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(
    argv: list[str], cwd: Path, processes: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], str]:
    """Start ``argv`` and wait for the app's ``ready`` line."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("ready"), (line, process.stderr.read() if process.stderr else "")
    return process, line


# --- options and environment ---------------------------------------------------------------------


def test_options_become_configuration_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    values = parse_options(
        interval=0.5,
        port=9100,
        db="history/perf.db",
        jsonl="out.jsonl",
        options=["http_host=0.0.0.0", "disabled_collectors=system,process", "store_enabled="],
    )
    assert values == {
        "interval": "0.5",
        "http_port": "9100",
        "db_path": str(tmp_path / "history" / "perf.db"),
        "jsonl_path": str(tmp_path / "out.jsonl"),
        "http_host": "0.0.0.0",
        "disabled_collectors": "system,process",
        "store_enabled": "",
    }
    with pytest.raises(ConfigError, match=r"--option 'http_port' is not KEY=VALUE"):
        parse_options(options=["http_port"])
    with pytest.raises(ConfigError, match=r"--option '=1' is not KEY=VALUE"):
        parse_options(options=["=1"])


def test_environment_prepends_the_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = {"PATH": "/bin", "PYTHONPATH": os.pathsep.join(["/a", BOOTSTRAP_DIR, "/b"])}
    env = build_environment({"http_port": "9100", "interval": "0.25"}, base)
    assert env["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP_DIR, "/a", "/b"]
    assert env["PERFSDK_HTTP_PORT"] == "9100"
    assert env["PERFSDK_INTERVAL"] == "0.25"
    assert env[BOOTSTRAP_ENV] == BOOTSTRAP_DIR
    assert env["PATH"] == "/bin"
    assert base == {"PATH": "/bin", "PYTHONPATH": os.pathsep.join(["/a", BOOTSTRAP_DIR, "/b"])}
    assert build_environment({}, {})["PYTHONPATH"] == BOOTSTRAP_DIR


def test_environment_is_validated_before_the_program_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"unknown option 'htp_port' \(perfsdk run command line\)"
    ):
        build_environment({"htp_port": "1"}, {})
    with pytest.raises(ConfigError, match=r"http_port=70000 .*PERFSDK_HTTP_PORT.* 0\.\.65535"):
        build_environment({"http_port": "70000"}, {})
    with pytest.raises(ConfigError, match=r"interval='soon' .* is not a number"):
        build_environment({"interval": "soon"}, {})
    (tmp_path / "perfsdk.toml").write_text("http_prot = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown option 'http_prot'.*perfsdk\.toml"):
        build_environment({}, {})
    assert "PERFSDK_X" in build_environment({"x": "1"}, {}, validate=False)


def test_usage_and_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 2
    assert "a command to run is required" in capsys.readouterr().err
    assert main(["run", "--"]) == 2
    capsys.readouterr()
    assert main(["run", "--port", "70000", "--", "true"]) == 1
    assert capsys.readouterr().err.startswith("perfsdk: error: http_port=70000")
    assert main(["run", "-o", "nope=1", "--", "true"]) == 1
    assert "unknown option 'nope'" in capsys.readouterr().err
    assert main(["run", "--port", "x"]) == 2


def test_exit_status() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 128 + signal.SIGTERM
    assert exit_status(-signal.SIGKILL) == 137


# --- the program's exit code and signals ---------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--no-exec"]], ids=["exec", "no-exec"])
@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_passes_through(tmp_path: Path, mode: list[str], code: int) -> None:
    argv = [*launcher(tmp_path, *mode), "--", sys.executable, "-c", f"raise SystemExit({code})"]
    result = run(argv, tmp_path)
    assert result.returncode == code, result.stderr
    assert "perfsdk" not in result.stderr


@pytest.mark.parametrize("mode", [[], ["--no-exec"]], ids=["exec", "no-exec"])
def test_missing_command(tmp_path: Path, mode: list[str]) -> None:
    result = run([*launcher(tmp_path, *mode), "--", "no-such-program-perfsdk"], tmp_path)
    assert result.returncode == 127
    assert "perfsdk: error: cannot run 'no-such-program-perfsdk'" in result.stderr


def test_exec_keeps_the_process_id(
    tmp_path: Path, app: Path, started: list[subprocess.Popen[str]]
) -> None:
    process, line = start(
        [*launcher(tmp_path), "--", sys.executable, str(app), "--handle", "--wait"],
        tmp_path,
        started,
    )
    assert line.split()[1] == str(process.pid)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 7, err
    assert out == "handled SIGTERM\n"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_no_exec_forwards_signals(
    tmp_path: Path, app: Path, started: list[subprocess.Popen[str]], sig: str
) -> None:
    process, line = start(
        [*launcher(tmp_path, "--no-exec"), "--", sys.executable, str(app), "--handle", "--wait"],
        tmp_path,
        started,
    )
    assert line.split()[1] != str(process.pid)
    process.send_signal(getattr(signal, sig))
    out, err = process.communicate(timeout=30)
    assert out == f"handled {sig}\n", err
    assert process.returncode == 7


def test_no_exec_reports_death_by_signal_as_128_plus_n(
    tmp_path: Path, app: Path, started: list[subprocess.Popen[str]]
) -> None:
    process, _ = start(
        [*launcher(tmp_path, "--no-exec"), "--", sys.executable, str(app), "--wait"],
        tmp_path,
        started,
    )
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM


# --- the bootstrap -------------------------------------------------------------------------------


def test_agent_runs_in_the_program(
    tmp_path: Path, app: Path, started: list[subprocess.Popen[str]]
) -> None:
    from perfsdk.store import history
    from perfsdk.top_cli import read_endpoint

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "perfsdk",
        "run",
        "--port",
        str(port),
        "--db",
        "history.db",
        "--interval",
        "0.2",
        "--",
        sys.executable,
        str(app),
        "--handle",
        "--wait",
    ]
    process, line = start(argv, tmp_path, started)
    assert line.split()[2] == "agent"

    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20
    timers = {}
    while time.monotonic() < deadline:
        try:
            timers = read_endpoint(url, timeout=2).timers
        except Exception:
            timers = {}
        if ("run_cli_app_seconds", (("step", "work"),)) in timers:
            break
        time.sleep(0.1)
    series = timers[("run_cli_app_seconds", (("step", "work"),))]
    assert series.count == 25
    assert 0.0005 < series.p50 < 0.5

    # The program exits through its SIGTERM handler: the agent's last round runs at exit.
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 7, err
    assert "perfsdk: the agent did not start" not in err
    counts = history(
        "run_cli_app_seconds", {"step": "work"}, stat="count", db_path=tmp_path / "history.db"
    )
    assert sum(p.value for p in counts) == 25


def test_program_own_sitecustomize_still_runs(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text(
        "import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\nMARKER = 42\n", encoding="utf-8"
    )
    script = (
        "import os, sys, sitecustomize, perfsdk\n"
        "print(os.environ.get('USER_SITECUSTOMIZE'), getattr(sitecustomize, 'MARKER', None),\n"
        "      perfsdk.get_agent() is not None,\n"
        "      any(p.rstrip('/').endswith('_bootstrap') for p in sys.path))\n"
    )
    argv = [*launcher(tmp_path), "--", sys.executable, "-c", script]
    result = run(argv, tmp_path, environment(user))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ran", "42", "True", "False"]


def test_failing_sitecustomize_is_reported_and_the_agent_still_starts(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    script = "import perfsdk; print(perfsdk.get_agent() is not None)"
    result = run(
        [*launcher(tmp_path), "--", sys.executable, "-c", script], tmp_path, environment(user)
    )
    assert result.returncode == 0
    assert result.stdout == "True\n"
    assert "Error in sitecustomize; set PYTHONVERBOSE for traceback:\nRuntimeError: boom" in (
        result.stderr
    )


def test_a_failing_agent_never_stops_the_program(tmp_path: Path) -> None:
    # Bypass the launcher's validation to make perfsdk.start() raise inside the program.
    env = build_environment({"http_port": "not-a-port"}, environment(), validate=False)
    script = "import perfsdk; print('program ran', perfsdk.get_agent()); raise SystemExit(5)"
    result = run([sys.executable, "-c", script], tmp_path, env)
    assert result.returncode == 5
    assert result.stdout == "program ran None\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("perfsdk: the agent did not start in process ")
    assert "http_port='not-a-port'" in lines[0]
    assert lines[0].endswith("the program runs without it")


def test_bootstrap_module_does_nothing_when_imported_by_name() -> None:
    import perfsdk
    from perfsdk._bootstrap import BOOTSTRAP_DIR as bootstrap_dir
    from perfsdk._bootstrap import sitecustomize  # noqa: F401

    assert bootstrap_dir == BOOTSTRAP_DIR
    assert perfsdk.get_agent() is None
    assert perfsdk.run_cli.BOOTSTRAP_ENV == BOOTSTRAP_ENV
