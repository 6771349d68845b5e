"""Application services: the unit-of-work side of kinloop.

Each function takes a SQLAlchemy `Connection` inside a transaction that the caller owns
(the CLI command, the HTTP request, the job) and never commits on its own.
"""
