"""Launch scripts: svilm training on Cloud TPU VMs, GKE (through xpk) and SLURM GPU clusters.

Each is a command-line tool run from the repository root (`python -m launch.tpu_vm ...`,
`python -m launch.gke_xpk ...`, `python -m launch.slurm ...`); `--dry-run` prints the exact
shell commands (and the sbatch script) without running anything. See docs/launch.md.
"""
