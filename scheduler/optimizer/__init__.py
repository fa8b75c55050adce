"""The pure planner: build, solve, extract and validate plans over sites x pools x slots."""

from scheduler.optimizer.planner import plan_problem

__all__ = ["plan_problem"]
