"""Shared pieces of the config files (imported by path-loaded configs)."""


def quick(c, layers=3):
    """Embedded Fashion-MNIST at 16x16, C=8, few short epochs: minutes on 2 CPU cores."""
    c.dataset = "fashion_mnist"
    c.data.image_size = 16
    c.data.max_examples = 2560
    c.model.C = 8
    c.model.layers = layers
    c.model.depthwise = "auto"  # taps on CPU: since the XLA:CPU fusion fixes it beats 'conv' end to end
    c.batch_size = 32
    c.epochs = 4
    c.steps_per_epoch = 20
    c.eval_batches = 8
    c.log_every = 5
    return c
