"""Search the partition space with the compiled cost model and rank the plans."""
