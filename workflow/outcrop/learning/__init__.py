"""Learning: BYOL, backbones, multispectral augmentations, training and embedding."""
