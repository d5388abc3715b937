"""The WSGI application gunicorn serves: ``gunicorn server.wsgi:app``."""

from server.app import create_app

app = create_app()
