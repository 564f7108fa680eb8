"""Per-API stages around the security stage: CORS and transports in front of it (a preflight is
answered before authentication), interceptors behind it (after authentication and throttling)."""

from asgi_apim.edge.cors import APICORSMiddleware
from asgi_apim.edge.interceptors import InterceptorContext, InterceptorMiddleware, ResponseContext
from asgi_apim.edge.transports import TransportMiddleware

__all__ = [
    "APICORSMiddleware",
    "InterceptorContext",
    "InterceptorMiddleware",
    "ResponseContext",
    "TransportMiddleware",
]
