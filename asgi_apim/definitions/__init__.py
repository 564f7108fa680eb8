"""API definitions: an OpenAPI (3.0, 3.1) or Swagger (2.0) document with WSO2's ``x-wso2-*``
extensions, read into the keys of an ``[[apis]]`` table (docs/definitions.md)."""

from asgi_apim.definitions.mapping import load_definition

__all__ = ["load_definition"]
