from notes import __version__


def test_health_check(client):
    response = client.get("/api/v1/utils/health-check/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_create_and_read_note(client):
    response = client.post("/api/v1/notes/", json={"text": "buy milk"})
    assert response.status_code == 201
    note = response.json()
    assert note["text"] == "buy milk"

    response = client.get(f"/api/v1/notes/{note['id']}")
    assert response.status_code == 200
    assert response.json()["text"] == "buy milk"


def test_missing_note(client):
    assert client.get("/api/v1/notes/999").status_code == 404


def test_admin_stats_needs_the_password(client):
    client.post("/api/v1/notes/", json={"text": "one"})
    assert client.get("/api/v1/admin/stats").status_code == 401
    assert client.get("/api/v1/admin/stats", auth=("admin", "wrong-password")).status_code == 401
    response = client.get("/api/v1/admin/stats", auth=("admin", "test-password-123"))
    assert response.json() == {"notes": 1}
