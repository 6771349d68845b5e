"""The HTTP API: a thin FastAPI adapter over the services (see `kinloop.api.app.create_app`)."""
