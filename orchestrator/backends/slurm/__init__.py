"""The SLURM backend: commands.py runs sbatch/sacct/squeue/scancel, parse.py reads their output, script.py renders the sbatch script."""
