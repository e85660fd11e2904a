"""The Python client for a Distillery server (see client.py). Needs only httpx, pandas and
tqdm: nothing of the server is imported, so it installs and runs on any machine."""

from distillery_client.client import (
    DEFAULT_URL,
    Client,
    Dataset,
    DistilleryError,
    Job,
    JobFailedError,
    JobProgressBar,
    RemoteModel,
)

__all__ = [
    "DEFAULT_URL",
    "Client",
    "Dataset",
    "DistilleryError",
    "Job",
    "JobFailedError",
    "JobProgressBar",
    "RemoteModel",
]
