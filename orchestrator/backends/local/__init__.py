"""The local backend: a detached queue (queue.py) that gives each run its GPUs (gpus.py)."""
