"""End-to-end tests: the local stack driven as a user drives it."""
