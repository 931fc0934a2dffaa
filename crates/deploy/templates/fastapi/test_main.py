from fastapi.testclient import TestClient

from main import app

client = TestClient(app)


def test_health():
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_index_names_the_service():
    r = client.get("/")
    assert r.status_code == 200
    assert r.json()["service"] == "{{NAME}}"
