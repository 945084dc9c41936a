"""A Turn whose deadline passes after a given number of checks: "stops between two steps" made
deterministic (no clock, so the same on a slow CPU and a fast GPU)."""

from speech2image.errors import DeadlineExceeded
from speech2image.serving.scheduler import Turn


class DeadlineAfterChecks(Turn):
    def __init__(self, checks: int):
        super().__init__()
        self.left, self.places = checks, []

    def check(self, where: str) -> None:
        self.places.append(where)
        if len(self.places) > self.left:
            raise DeadlineExceeded(f"deadline passed at {where}; ask again with a longer timeout")
