"""Wire formats: one module per protocol, parsing from memoryviews and building into buffers."""
