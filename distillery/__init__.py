"""Distillery's ML core: tables, hyperparameters, backbones, losses, training, bundles, prediction.

Plain Python + torch + transformers; it knows nothing of HTTP, SQL or Celery.
"""

__version__ = "0.1.0"
