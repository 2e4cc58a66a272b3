"""The recipe application: recipe schema, model zoo, datasets, training loop, stages and
checkpoints. Built on the core library (penalties, structure, stats); the core never imports it."""
