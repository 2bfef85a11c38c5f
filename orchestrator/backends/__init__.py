"""Schedulers that run the jobs: the Backend protocol (base.py), its implementations, and the registry."""
