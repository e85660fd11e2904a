"""The service's domain layer, shared by its shells (the HTTP API in app/, the Celery worker in
worker/, the command line in distillery_cli/): settings, database, ORM, artifact store, queue,
the job lifecycle and the dataset, model, job and variant services.

Nothing here knows HTTP: services raise `domain.errors` (not found, conflict, invalid with a
field), and each shell says them its own way (app/errors.py maps them to problem+json).
"""
