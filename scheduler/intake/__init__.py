"""Batch intake: streaming validation of input files and creation of batches with their parts."""
