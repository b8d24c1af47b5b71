"""Run orchestration: run directories, checkpoints, the online trainer."""
