"""The read side: search, filter, sort and paginate the read table; history and time travel."""
