"""The example app of the contract: a small pets API, secured by asgi-apim.

Run it secured with::

    asgi-apim pki init example_app/certs
    asgi-apim serve example_app.main:app --config example_app/deployment.toml \
        --ssl-certfile example_app/certs/server.pem --ssl-keyfile example_app/certs/server.key

The app itself knows nothing of certificates or tokens: it reads who is calling
from ``request.user`` and ``request.auth``, as with Starlette's own
AuthenticationMiddleware.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request

from asgi_apim.identity import Principal, anonymous_dict

app = FastAPI(title="Pets (asgi-apim example)")

PETS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "Rex", "kind": "dog"},
    2: {"id": 2, "name": "Tom", "kind": "cat"},
}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/pets/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    user = request.scope.get("user")
    if isinstance(user, Principal):
        return user.as_dict()
    return anonymous_dict()


@app.get("/pets")
async def list_pets() -> list[dict[str, Any]]:
    return list(PETS.values())


@app.get("/pets/{pet_id}")
async def get_pet(pet_id: int) -> dict[str, Any]:
    if pet_id not in PETS:
        raise HTTPException(status_code=404, detail="no such pet")
    return PETS[pet_id]


@app.delete("/pets/{pet_id}", status_code=204)
async def delete_pet(pet_id: int) -> None:
    if PETS.pop(pet_id, None) is None:
        raise HTTPException(status_code=404, detail="no such pet")
