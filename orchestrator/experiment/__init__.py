"""The experiment directory (store.py), its typed manifest (manifest.py) and what a submit will do (plan.py)."""
