import os

import pytest

os.environ.setdefault("NOTES_DATABASE_URL", "sqlite://")
os.environ.setdefault("NOTES_FIRST_SUPERUSER_PASSWORD", "test-password-123")


@pytest.fixture()
def client():
    from fastapi.testclient import TestClient
    from sqlalchemy.pool import StaticPool

    from notes import db
    from notes.main import app
    from notes.models import Base

    if db.settings.database_url == "sqlite://":
        # one in-memory database shared by every session
        db.engine = db.create_engine("sqlite://", poolclass=StaticPool,
                                     connect_args={"check_same_thread": False})
        db.SessionLocal.configure(bind=db.engine)
    Base.metadata.create_all(db.engine)
    with TestClient(app) as client:
        yield client
    Base.metadata.drop_all(db.engine)
