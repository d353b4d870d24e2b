import secrets
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from notes import __version__
from notes.db import get_session
from notes.models import Note
from notes.settings import get_settings

SessionDep = Annotated[Session, Depends(get_session)]
basic = HTTPBasic()


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    text: str
    created_at: datetime | None = None


def require_admin(credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> None:
    password = get_settings().first_superuser_password
    ok_user = secrets.compare_digest(credentials.username.encode(), b"admin")
    ok_password = secrets.compare_digest(credentials.password.encode(), password.encode())
    if not (ok_user and ok_password):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})


utils = APIRouter(prefix="/utils", tags=["utils"])
notes = APIRouter(prefix="/notes", tags=["notes"])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@utils.get("/health-check/")
def health_check(session: SessionDep) -> dict:
    session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}


@notes.post("/", status_code=status.HTTP_201_CREATED, response_model=NoteOut)
def create_note(note_in: NoteIn, session: SessionDep) -> Note:
    note = Note(text=note_in.text)
    session.add(note)
    session.commit()
    session.refresh(note)
    return note


@notes.get("/{note_id}", response_model=NoteOut)
def read_note(note_id: int, session: SessionDep) -> Note:
    note = session.get(Note, note_id)
    if note is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Note not found")
    return note


@admin.get("/stats")
def stats(session: SessionDep) -> dict:
    return {"notes": session.scalar(select(func.count()).select_from(Note))}


api = APIRouter(prefix="/api/v1")
api.include_router(utils)
api.include_router(notes)
api.include_router(admin)

app = FastAPI(title="Notes", version=__version__)
app.include_router(api)
