"""Storage: SQLAlchemy 2 tables, engines for SQLite and PostgreSQL, Alembic migrations."""
