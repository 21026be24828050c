"""Guest payload sources (GNU as), installed as the data package kvmharness.guests."""
