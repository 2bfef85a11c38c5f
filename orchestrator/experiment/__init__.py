"""The experiment directory (store.py), its typed manifest (manifest.py) and what a submit will do (plan.py)."""

MANIFEST_FILE = "manifest.json"  # in the experiment directory; named here so a reader of the name needs no pydantic
