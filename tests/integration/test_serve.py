"""`merit serve`: migrations, first-start setup and gunicorn, as `make run` uses them."""

from __future__ import annotations

import requests
import sqlalchemy as sa

from server.auth.models import User
from server.db import create_engine
from tests.support.servers import ServerProcess, server_env


def test_serve_starts_answers_and_survives_a_restart_with_its_data(tmp_path, database_url):
    env = server_env(
        database_url,
        tmp_path,
        STORAGE_URL=None,
        SECRET_KEY=None,
        ADMIN_EMAIL=None,
        ADMIN_PASSWORD=None,
        ODK_VALIDATE=None,
    )
    log = tmp_path / "server.log"
    with ServerProcess(env, log_path=log) as server:
        assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
        ready = requests.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
    first_output = log.read_text()
    password_file = tmp_path / "var" / "admin-password.txt"
    assert "merit-collect is ready." in first_output
    password = password_file.read_text().splitlines()[1]
    assert f"Password:       {password}" in first_output

    with ServerProcess(env, log_path=log) as server:
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    second_output = log.read_text()[len(first_output) :]
    assert "merit-collect is ready." in second_output
    assert password not in second_output  # printed once only
    assert password_file.read_text().splitlines()[1] == password

    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(User)).scalar() == 1
    engine.dispose()
