"""Static files carry ``X-Content-Type-Options: nosniff`` however the server runs: through the middleware
(WhiteNoise, gunicorn or runserver) and from ``manage.py runserver`` with ``DEBUG=1``, whose own static handler
would otherwise serve them around every middleware."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import get_commands, load_command_class
from django.test import Client

STATIC = ["/static/css/app.css", "/static/js/review.js"]


@pytest.mark.parametrize("path", STATIC)
def test_static_files_are_served_with_nosniff(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    not_modified = Client().get(path, HTTP_IF_NONE_MATCH=response["ETag"])
    assert not_modified.status_code == 304 and not_modified["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("debug", [True, False])
def test_runserver_serves_static_files_with_nosniff(debug: bool, settings: Any) -> None:
    settings.DEBUG = debug  # DEBUG=1 make run: Django's runserver would serve static files itself
    command = load_command_class(get_commands()["runserver"], "runserver")
    options = vars(command.create_parser("manage.py", "runserver").parse_args([]))
    handler = command.get_handler(**options)
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        started.update(status=status, headers=dict(headers))

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": STATIC[0],
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    body = handler(environ, start_response)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    assert started["status"].startswith("200")
    assert started["headers"].get("X-Content-Type-Options") == "nosniff"
