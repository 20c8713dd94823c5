"""Container health check of the web image: the login page answers 200 to a request like the TLS proxy's
(Host: the first ALLOWED_HOSTS name, X-Forwarded-Proto: https), so neither the HTTPS redirect nor the host check
turns a healthy process into a failing check."""

import http.client
import os
import sys

host = os.environ.get("ALLOWED_HOSTS", "localhost").split(",")[0].strip().lstrip(".")
if host in ("", "*"):
    host = "localhost"
connection = http.client.HTTPConnection("127.0.0.1", 8000, timeout=3)
connection.request("GET", "/login/", headers={"Host": host, "X-Forwarded-Proto": "https"})
status = connection.getresponse().status
sys.exit(0 if status == 200 else 1)
