"""Everything that imports torch: data, models, the training loop, evaluation, diagnostics,
checkpoints, the TensorBoard writer. Imports dropbn.base and dropbn.record only."""
