"""Training: the LightningModule every architecture shares, and one run from a config."""
