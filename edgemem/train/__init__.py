"""Training loops, losses, checkpoints, evaluation; torchrun DDP."""
