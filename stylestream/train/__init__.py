"""Training: VGG-16 perceptual loss, optimizer and schedule registries, data, the train loop.

Import the pieces from their modules (stylestream.train.config, .loop, .losses, ...); this
package module stays light so `stylestream --help` does not import torch."""
