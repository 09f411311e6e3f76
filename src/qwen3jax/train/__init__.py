"""Training core: the one shared train step, the loss registry, optimizers, checkpoints and the run loop."""
