"""Shared pieces of the config files (imported by path-loaded configs)."""


def quick(c, layers=3):
    """Embedded Fashion-MNIST at 16x16, C=8, few short epochs: minutes on 2 CPU cores."""
    c.dataset = "fashion_mnist"
    c.data.image_size = 16
    c.data.max_examples = 2560
    # CIFAR's crop padding 4 on 32 pixels, in proportion: 2 on 16 (4 would shift a 16-pixel
    # garment by a quarter of the image; the padding is black, as torchvision's)
    c.data.crop_padding = 2
    c.model.C = 8
    c.model.layers = layers
    c.model.depthwise = "auto"  # taps on CPU: since the XLA:CPU fusion fixes it beats 'conv' end to end
    c.batch_size = 32
    c.epochs = 4
    c.steps_per_epoch = 20
    c.eval_batches = 8
    c.log_every = 5
    return c
