from app import app


def client():
    app.config.update(TESTING=True)
    return app.test_client()


def test_health():
    r = client().get("/health")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok"}


def test_index_names_the_service():
    r = client().get("/")
    assert r.status_code == 200
    assert r.get_json()["service"] == "{{NAME}}"
