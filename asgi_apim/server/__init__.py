"""Running an app protected on uvicorn: ``asgi-apim serve``.

protocols  uvicorn protocol classes adding the ASGI TLS extension and the socket peer
tls        the server's SSLContext: trusts what the configuration trusts, kept current
selftest   start-up proof that the installed uvicorn still carries the extension
app        the per-worker application factory uvicorn imports
run        the ``serve`` command
"""
