from pathlib import Path

from asgi_apim.config import parse_config
from asgi_apim.routing import Router


def router() -> Router:
    cfg = parse_config(
        {
            "public_paths": ["/health", "/docs"],
            "apis": [
                {
                    "name": "pets",
                    "context": "/pets",
                    "resources": [
                        {"path": "/pets/{id}", "methods": ["DELETE"], "scopes": ["pets:write"]},
                        {"path": "/open", "methods": ["GET"], "public": True},
                    ],
                },
                {"name": "petsadmin", "context": "/pets/admin"},
                {"name": "root", "context": "/api"},
            ],
        },
        base=Path("/"),
    )
    return Router.from_config(cfg)


def test_public_paths_at_segment_boundaries() -> None:
    r = router()
    assert r.match("GET", "/health").public
    assert r.match("GET", "/docs/oauth2-redirect").public
    assert not r.match("GET", "/healthz").public
    assert r.match("GET", "/healthz").api is None


def test_longest_context_wins_and_boundaries() -> None:
    r = router()
    assert r.match("GET", "/pets").api.name == "pets"
    assert r.match("GET", "/pets/1").api.name == "pets"
    assert r.match("GET", "/pets/admin/x").api.name == "petsadmin"
    assert r.match("GET", "/petshop").api is None


def test_resources_by_template_and_method() -> None:
    r = router()
    route = r.match("DELETE", "/pets/7")
    assert route.resource is not None and route.resource.scopes == ("pets:write",)
    assert r.match("GET", "/pets/7").resource is None
    assert r.match("DELETE", "/pets/7/extra").resource is None
    open_route = r.match("GET", "/pets/open")  # relative to the context
    assert open_route.public and open_route.api.name == "pets"


def test_cache_is_bounded() -> None:
    r = router()
    for i in range(5000):
        r.match("GET", f"/x/{i}")
    assert len(r._cache) <= 4096


def test_which_paths_route_by_method() -> None:
    r = router()
    for method in ("GET", "DELETE"):
        assert r.varies_by_method(r.match(method, "/pets/7"), "/pets/7")  # DELETE has its resource, GET has none
        assert r.varies_by_method(r.match(method, "/pets/open"), "/pets/open")
    for path in ("/pets", "/pets/7/extra", "/pets/admin/7", "/health", "/api/x", "/elsewhere"):
        assert not r.varies_by_method(r.match("GET", path), path), path
        assert len({r.match(m, path) for m in ("GET", "POST", "DELETE")}) == 1, path


def test_head_follows_the_get_resource_it_is_served_by() -> None:
    # Starlette answers HEAD with the GET endpoint: a GET resource's rules (scopes, public) are HEAD's too
    r = router()
    assert r.match("HEAD", "/pets/open").resource is r.match("GET", "/pets/open").resource is not None
    assert r.match("HEAD", "/pets/open").public
    assert r.match("HEAD", "/pets/1").resource is None  # DELETE's resource is not HEAD's
