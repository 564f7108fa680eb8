"""Names of the scope entries one stage leaves for the next.

A request flows one way: routing -> certificate -> policy -> throttling -> app.
Each stage reads what the one before left here and never reaches back.
"""

PEER = "asgi_apim.peer"  # (host, port) of the real socket peer, set by our uvicorn protocols
CONNECTION_LOST = "asgi_apim.connection_lost"  # asyncio.Future done when the client's connection closes (our protocols)
ROUTE = "asgi_apim.route"  # routing.Route of a request on an API (when throttling is not called directly)
CERTIFICATE = "asgi_apim.certificate"  # certs.middleware.CertificateOutcome
DECISION = "asgi_apim.decision"  # list[str]: the policy's steps, for explain / X-APIM-Decision
