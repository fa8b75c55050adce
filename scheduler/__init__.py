"""gridshift scheduler: API, store, planner, forecasts and dispatch."""
