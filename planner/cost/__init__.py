"""The symbolic cost model: every formula of kd-planner lives in this package (sympy only, no torch)."""
