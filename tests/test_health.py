from fastapi.testclient import TestClient


def test_healthz_and_readyz_answer_without_authentication(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json() == {"status": "ready"}
