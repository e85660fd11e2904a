"""Distillery's Celery worker: runs training jobs."""
