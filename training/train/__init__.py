"""Training (`colord train`): the config tree, the losses, the loop and its checkpoints."""
