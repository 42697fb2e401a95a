"""The localhost HTTP + JSON API: a thin event source over the supervisor."""
