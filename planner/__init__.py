"""kd-planner: plan how to split a frozen teacher and a trained student across a GPU cluster."""

__version__ = "0.1.0"
