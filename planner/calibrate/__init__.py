"""Measure the machine at hand (torch micro-benchmarks) for the topology file."""
