"""The one error type of `bdh_graph`: a ValueError whose message is one line naming the argument."""


class GraphError(ValueError):
    """Bad input to the graph simulator: one line, naming the group or argument, expected vs got."""


class MonitorIndexError(GraphError, IndexError):
    """A monitor asked to record indices outside the population or edge set (names the valid range)."""
