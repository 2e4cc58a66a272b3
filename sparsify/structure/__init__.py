"""Structure: find dead neurons/channels through the fx graph and remove them physically."""
