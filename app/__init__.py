"""Distillery's HTTP service."""
