"""``matrix.yaml`` (and the cluster profile it names) -> typed, validated runs.

Data flows one way through the modules:

* ``yamlfile``: strict, bounded YAML (duplicate keys, sizes, ``3e-5`` as a float);
* ``problems``: key paths, another tool's spelling of a knob, pydantic's errors as messages;
* ``cluster``: finding and checking a cluster profile (``slurm_templates/<name>/profile.yaml``);
* ``extends``: run names and their ``extends`` chains; ``grid``: the grid axes a run gets;
* ``expand``: merged settings, grid combinations, run names and ids -> ``RunSpec``;
* ``preflight``: what the login node can check beyond the matrix (model config, data files);
* ``load``: the top-level keys and ``load_matrix``, which reports every problem at once;
* ``names``: the run-name patterns of ``--only`` and ``cancel``.

Nothing is written by this package except ``check_root_writable``'s experiment directory.
"""

from orchestrator.matrix.load import Matrix, check_root_writable, load_matrix
from orchestrator.matrix.names import matches, name_patterns, select

__all__ = ["Matrix", "check_root_writable", "load_matrix", "matches", "name_patterns", "select"]
