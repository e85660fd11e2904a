"""Thin routers: translate HTTP to service calls and ORM rows to response bodies."""
