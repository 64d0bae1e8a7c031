"""Analysis tools: frequency usage, attention entropy, effective learning rate."""
