"""Leader key + chord: a thin event source over the supervisor."""
