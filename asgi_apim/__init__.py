"""asgi-apim: WSO2 API Manager's gateway security as pure ASGI middleware."""

from asgi_apim.config import Config, load_config
from asgi_apim.errors import APIMError, ConfigError, RequestError
from asgi_apim.identity import Principal

__all__ = ["APIMError", "Config", "ConfigError", "Principal", "RequestError", "load_config"]
