"""Tracker engine: definitions, items, workflows and the services every door goes through.

Nothing in this package imports Flask; the web UI, the CLI and plugins build on it.
"""
