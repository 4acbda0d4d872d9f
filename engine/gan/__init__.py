"""The GAN fit: generator and discriminator, the training step, its accelerator interface, checkpoints."""
