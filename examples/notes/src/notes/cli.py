"""notes-admin: small maintenance commands."""

import argparse

from sqlalchemy import func, select

from notes import __version__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="notes-admin", description=__doc__)
    parser.add_argument("--version", action="version", version=f"notes {__version__}")
    parser.add_argument("command", nargs="?", default="stats", choices=["stats"],
                        help="stats: count the notes (default)")
    parser.parse_args(argv)

    from notes.db import SessionLocal
    from notes.models import Note

    with SessionLocal() as session:
        count = session.scalar(select(func.count()).select_from(Note))
    print(f"notes: {count}")


if __name__ == "__main__":
    main()
