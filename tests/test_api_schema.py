"""The OpenAPI document's operations and the API reference page (its browser test: tests/e2e/test_api_docs.py)."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from .conftest import World, user_client

VENDOR = Path(__file__).resolve().parent.parent / "static" / "vendor" / "swagger-ui"


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    schema = json.loads(Client().get(reverse("api:schema")).content)
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def test_every_operation_has_a_summary(db: Any) -> None:
    operations = _operations()
    assert len(operations) > 20
    missing = [f"{method} {path}" for method, path, operation in operations if not operation.get("summary", "").strip()]
    assert not missing, f"operations without a summary: {missing}"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self.scripts.append(named.get("src"))
        if tag == "style" or "style" in named or any(name.startswith("on") for name in named):
            self.inline.append(tag)
        if tag == "link" and named.get("rel") == "stylesheet":
            self.stylesheets.append(named["href"] or "")


def test_docs_page_has_nothing_inline_and_serves_its_script_and_assets_itself(alice: World) -> None:
    url = reverse("api:docs")
    assert Client().get(url).status_code in (401, 403)
    assert Client().get(url, {"script": ""}).status_code in (401, 403)

    client = user_client(alice.users["staff"])
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = _Page()
    page.feed(response.content.decode())
    assert page.inline == [], "inline styles or handlers would need 'unsafe-inline'"
    assert None not in page.scripts, "an inline <script> would need 'unsafe-inline'"
    assert page.scripts == ["/static/vendor/swagger-ui/swagger-ui-bundle.js", f"{url}?script="]
    for asset in [page.scripts[0], *page.stylesheets]:
        assert asset.startswith("/static/") and finders.find(asset.removeprefix("/static/")), asset
    csp = response["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp

    script = client.get(page.scripts[1])
    assert script.status_code == 200 and script["Content-Type"] == "application/javascript"
    body = script.content.decode()
    assert "SwaggerUIBundle(" in body and f'url: "{reverse("api:schema")}"' in body


def test_vendored_swagger_ui_is_the_package_its_note_names() -> None:
    note = (VENDOR / "README.md").read_text()
    assert "`swagger-ui-dist`" in note and "**5.35.0**" in note and "sha512-" in note
    listed = dict(re.findall(r"^\s*\| `([^`]+)` \| `([0-9a-f]{64})` \|$", note, flags=re.M))
    on_disk = {p.name for p in VENDOR.iterdir()} - {"README.md"}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_document_is_made_once_even_when_first_asked_for_by_many_threads_at_once(
    transactional_db: Any, monkeypatch: Any
) -> None:
    """Two first requests in one gunicorn process once answered a 500: drf-spectacular loads its extensions lazily,
    not thread-safely. The document is now made once per process, under a lock, and served to every caller."""
    import threading
    import time

    from clinics.api import docs

    made = []
    real = docs.ApiSchemaGenerator.get_schema

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(threading.get_ident())
        time.sleep(0.2)  # widen the window in which a second thread could start its own
        return real(self, *args, **kwargs)

    monkeypatch.setattr(docs.ApiSchemaGenerator, "get_schema", counted)
    monkeypatch.setattr(docs, "_schemas", {})
    answers: list[tuple[int, bytes]] = []

    def ask() -> None:
        response = Client().get(reverse("api:schema"))
        answers.append((response.status_code, response.content))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [200] * 6
    assert len({body for _, body in answers}) == 1
    assert len(made) == 1
    Client().get(reverse("api:schema"))
    assert len(made) == 1  # later requests are served the same document


def test_a_variant_of_the_document_is_built_for_its_request_and_neither_kept_nor_shown_to_others(
    db: Any, monkeypatch: Any
) -> None:
    """``?lang=`` and ``?version=`` give their own document; none is kept (callers could fill the memory with
    versions) and the plain document that everyone gets stays in the site's language."""
    from clinics.api import docs

    monkeypatch.setattr(docs, "_schemas", {})
    german = json.loads(Client().get(reverse("api:schema"), {"lang": "de"}).content)
    labelled = json.loads(Client().get(reverse("api:schema"), {"version": "anything"}).content)
    plain = json.loads(Client().get(reverse("api:schema")).content)
    assert list(docs._schemas) == ["plain"]
    assert labelled["info"]["version"] != plain["info"]["version"]

    def page_help(schema: dict[str, Any]) -> str:
        (page,) = [p for p in schema["paths"]["/api/v1/patients/"]["get"]["parameters"] if p["name"] == "page"]
        return page["description"]

    assert page_help(german) != page_help(plain) == "A page number within the paginated result set."
    assert page_help(json.loads(Client().get(reverse("api:schema")).content)) == page_help(plain)


def test_variants_are_limited_per_caller_and_the_plain_document_is_not(
    db: Any, monkeypatch: Any, settings: Any
) -> None:
    """Each variant costs a build (~0.1 s of CPU): past ``RATE_LIMITS["schema_variant"]`` an anonymous client IP
    gets 429 with Retry-After for variants, while the kept plain document and other addresses are still served."""
    from clinics.api import docs

    monkeypatch.setattr(docs, "_schemas", {})  # (the rate limiter's clock stands still: tests/conftest.py)
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "schema_variant": "2/60"}
    made: list[int] = []
    original = docs.ApiSchemaGenerator.get_schema

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(docs.ApiSchemaGenerator, "get_schema", counting)
    url = reverse("api:schema")
    client = Client(REMOTE_ADDR="203.0.113.7")
    statuses = [client.get(url, {"lang": lang}).status_code for lang in ("de", "fr", "nl")]
    assert statuses == [200, 200, 429]
    refused = client.get(url, {"version": "anything"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "rate_limited"
    assert len(made) == 2  # the refused variants were not built
    assert client.get(url).status_code == 200  # the plain document is served whatever the count
    assert Client(REMOTE_ADDR="198.51.100.9").get(url, {"lang": "de"}).status_code == 200
