"""Planning: config → run specs (grids, feasibility, resource estimates, code hashes) and parameter
counting, which needs no weights."""
