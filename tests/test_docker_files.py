"""docker/: what can be checked without a Docker daemon, and a rehearsal of the compose file.

Offline checks: the compose file parses and is complete (PostgreSQL, the service, two
workers, the IOCs; healthchecks, volumes, dependencies), every image it builds is a
stage of ``docker/Dockerfile``, every ``sdl`` command line in either file parses with
the real CLI (``sdl <command> --help`` runs, and the options and values given are
accepted), and every ``SDL_*`` variable is a real settings field with a valid value.

``test_compose_rehearsal`` (slow) runs the compose file's own commands as local
processes against a private PostgreSQL cluster, waits for each healthcheck, and runs
one experiment through the service and a worker: the deployment without the
containers.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sdl.testing import wait_until

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: str, env: dict | None = None) -> str:
    """Compose's ``${VAR:-default}``, with the defaults (or ``env``)."""
    env = env or {}
    return INTERPOLATION.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def stages() -> dict[str, str]:
    """Dockerfile stage name -> what it is built FROM."""
    found = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line.strip(), re.IGNORECASE)
        if m:
            found[m.group(2)] = m.group(1)
    return found


def _dockerfile_json_commands(keyword: str) -> list[list[str]]:
    """The exec-form (JSON array) ``CMD``/``HEALTHCHECK ... CMD`` lines of the Dockerfile."""
    import json

    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(keyword):
            m = re.search(r"CMD\s+(\[.*\])\s*$", line)
            if m:
                out.append(json.loads(m.group(1)))
    return out


def _sdl_command_lines(compose: dict) -> list[tuple[str, list[str]]]:
    lines = [(name, svc["command"]) for name, svc in compose["services"].items()
             if isinstance(svc.get("command"), list) and svc["command"][:1] == ["sdl"]]
    lines += [("Dockerfile CMD", cmd) for cmd in _dockerfile_json_commands("CMD") if cmd[:1] == ["sdl"]]
    return lines


def _settings_env_names() -> set[str]:
    from sdl.config import Settings
    from sdl.service.settings import ServiceSettings

    names = {f"SDL_{f.upper()}" for f in ServiceSettings.model_fields}
    names |= {f"SDL_{f.upper()}" for f in Settings.model_fields}
    return names | {"SDL_CONFIG"}  # read by `--config`'s default


# --------------------------------------------------------------------------- the compose file
def test_compose_has_the_facility_services(compose):
    services = compose["services"]
    assert "postgres" in services and services["postgres"]["image"].startswith("postgres:")
    workers = [n for n, s in services.items() if s.get("command", [])[:2] == ["sdl", "worker"]]
    assert len(workers) >= 2, workers
    assert [n for n, s in services.items() if s.get("command", [])[:2] == ["sdl", "serve"]] == ["service"]
    assert [n for n, s in services.items() if s.get("command", [])[:2] == ["sdl", "ioc"]] == ["iocs"]
    declared = set(compose.get("volumes") or {})
    assert "pgdata" in declared
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"
        if svc.get("restart") != "no":  # long-running services say when they are healthy
            test = svc.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])


def test_images_are_stages_of_the_dockerfile(compose, stages):
    assert next(iter(stages.values())) == "python:3.11-slim"  # the base stage
    text = DOCKERFILE.read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text  # torch 2.13.0+cpu of the lock
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert {"service", "iocs"} <= set(built)
    for name, build in built.items():
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context is {context}, not the repository"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages, f"{name}: no stage {build['target']!r} in docker/Dockerfile"
    # everything the Dockerfile copies exists
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.MULTILINE):
        for path in src.split():
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"
    # every folder the package needs is copied (pyproject's package-dir)
    import tomllib

    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = set(" ".join(re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.MULTILINE)).split())
    assert set(package_dirs.values()) <= copied, set(package_dirs.values()) - copied


def test_the_image_installs_exactly_the_lock():
    """Issue 15: the images install requirements/lock.txt, and sdl itself without resolving again."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    installs = re.findall(r"pip install ([^&\n]+)", text)
    assert installs, "the Dockerfile installs nothing"
    assert any("-r requirements/lock.txt" in line for line in installs), installs
    for line in installs:
        assert "-r requirements/lock.txt" in line or "--no-deps" in line, f"pip install {line}: not from the lock"
    assert "pip check" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!requirements/lock.txt" in ignore, "the lock is not sent to the build"


@pytest.mark.parametrize("where", ["compose", "Dockerfile"])
def test_every_sdl_command_is_a_real_cli_command(compose, where):
    from sdl.cli import app
    from sdl.instruments import check_instrument_name

    lines = [(n, c) for n, c in _sdl_command_lines(compose) if (n == "Dockerfile CMD") == (where == "Dockerfile")]
    assert lines
    runner = CliRunner()
    root = typer.main.get_command(app)
    for name, command in lines:
        args = command[1:]
        # the words naming the (sub)command, as `sdl <cmd> --help` shows it
        words, cmd, ctx = [], root, root.make_context("sdl", [], resilient_parsing=True)
        while hasattr(cmd, "list_commands"):  # a group (typer may bring its own click)
            word = args[len(words)]
            sub = cmd.get_command(ctx, word)
            assert sub is not None, f"{name}: `sdl {' '.join(args)}`: no command {word!r}"
            words.append(word)
            cmd, ctx = sub, sub.make_context(word, [], resilient_parsing=True)
        assert words, f"{name}: `sdl {' '.join(args)}` names no command"
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, f"sdl {' '.join(words)} --help: {result.output}"
        # the options and values given parse (types, ranges, required options), nothing runs
        cmd.make_context(" ".join(["sdl", *words]), list(args[len(words):]))
        if words == ["worker"]:
            check_instrument_name(args[args.index("--instrument") + 1])


def test_sdl_environment_variables_are_real_settings(compose, monkeypatch):
    from sdl.database import parse_store_url
    from sdl.service.settings import ServiceSettings

    known = _settings_env_names()
    dockerfile_env = set(re.findall(r"\b(SDL_\w+)=", DOCKERFILE.read_text()))
    assert dockerfile_env <= known, dockerfile_env - known
    seen = set()
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        sdl_env = {k: v for k, v in env.items() if k.startswith("SDL_")}
        unknown = set(sdl_env) - known
        assert not unknown, f"{name}: {unknown} are no SDL_ settings"
        seen |= set(sdl_env)
        if not sdl_env:
            continue
        # the values are valid too: the settings load from exactly this environment
        for key in [k for k in os.environ if k.startswith("SDL_")]:
            monkeypatch.delenv(key)
        for key, value in sdl_env.items():
            if value is not None:  # null: passed through from the shell
                monkeypatch.setenv(key, _interpolate(str(value)))
        settings = ServiceSettings()
        assert parse_store_url(settings.store_url).drivername == "postgresql+psycopg"
        assert "@postgres:5432/" in settings.store_url  # the compose service's name
        if name == "service":
            assert [i.name for i in settings.instruments] == ["sim-xrd", "pool:p3ht"]
    assert "SDL_STORE_URL" in seen


def test_healthcheck_commands_compile_and_name_real_things(compose):
    from sdl.epics_lab import list_pvs

    checks = [svc["healthcheck"]["test"] for svc in compose["services"].values() if "healthcheck" in svc]
    checks += [c for c in _dockerfile_json_commands("HEALTHCHECK")]
    pv_names = {pv["name"] for pv in list_pvs(None, "SDL:")}
    for test in checks:
        argv = test[1:] if test[0] in ("CMD", "CMD-SHELL") else test
        if argv[:2] == ["python", "-c"]:
            compile(argv[2], "<healthcheck>", "exec")
            for pv in re.findall(r"'(SDL:[^']+)'", argv[2]):
                assert pv in pv_names, f"healthcheck reads {pv}, which no IOC serves"
            if "urlopen" in argv[2]:
                assert "/health'" in argv[2]


def test_docker_compose_config_validates(compose):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here: the offline checks above stand in for it")
    out = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------- the deployment, without docker
def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _healthy(svc: dict, env: dict, what: str, procs: dict, timeout: float = 120) -> None:
    test = svc["healthcheck"]["test"]
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    argv = [sys.executable if a == "python" else a for a in argv]
    wait_until(lambda: subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0, timeout,
               interval=1, what=f"{what} to become healthy", proc=procs[what])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compose_rehearsal(compose, tmp_path):
    """The compose file's commands, environment and healthchecks, as local processes."""
    from sdl.service.pgcluster import PrivateCluster, pg_bin
    from sdl.testing import free_port

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    import httpx
    import psycopg

    services = compose["services"]
    with PrivateCluster() as cluster:  # its own folder under /tmp: the postgres user must reach it
        with psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE ROLE sdl LOGIN")
            conn.execute("CREATE DATABASE sdl OWNER sdl")
        http_port, ca_port = free_port(), free_port()
        token = "rehearsal-admin-token-0123456789"

        def env_of(svc: dict) -> dict:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SDL_", "EPICS_"))}
            for key, value in (svc.get("environment") or {}).items():
                if value is None:
                    value = token if key == "SDL_ADMIN_TOKEN" else ""
                value = _interpolate(str(value)).replace("@postgres:5432/", f"@127.0.0.1:{cluster.port}/")
                env[key] = value.replace("5064", str(ca_port)) if key.startswith("EPICS_") else value
            return env

        def argv_of(svc: dict) -> list[str]:
            argv = [shutil.which("sdl") or "sdl", *svc["command"][1:]]
            return [str(http_port) if a == "8000" else str(ca_port) if a == "5064" else a for a in argv]

        procs: dict[str, subprocess.Popen] = {}
        try:
            migrate = services["migrate"]
            done = subprocess.run(argv_of(migrate), env=env_of(migrate), capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            for name in [n for n in services if n not in ("postgres", "migrate")]:
                procs[name] = _start(argv_of(services[name]), env_of(services[name]), tmp_path / f"{name}.log")
            for name in procs:
                health_env = env_of(services[name])
                svc = dict(services[name])
                svc["healthcheck"] = {"test": [
                    a.replace(":8000/", f":{http_port}/") for a in services[name]["healthcheck"]["test"]
                ]}
                _healthy(svc, health_env, name, procs)
            url, headers = f"http://127.0.0.1:{http_port}", {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"{url}/health").json()["instruments"].keys() == {"sim-xrd", "pool:p3ht"}
            proposal = httpx.post(f"{url}/api/proposals", headers=headers, json={
                "title": "compose rehearsal", "kind": "proprietary", "instruments": ["sim-xrd"],
                "allocation": {"experiments": 5}}).json()["id"]
            httpx.post(f"{url}/api/proposals/{proposal}/approve", headers=headers, json={}).raise_for_status()
            submit = subprocess.run(
                [shutil.which("sdl") or "sdl", "submit", "sim-xrd", "--proposal", proposal, "--wait",
                 *shlex.split("-p A=0.3 -p B=0.4 -p C=0.3 -p temperature=420")],
                env={**os.environ, "SDL_URL": url, "SDL_TOKEN": token}, capture_output=True, text=True, timeout=300,
            )
            assert submit.returncode == 0, submit.stdout + submit.stderr
            assert '"status": "done"' in submit.stdout and '"fom"' in submit.stdout
        finally:
            for proc in procs.values():
                _stop(proc)
