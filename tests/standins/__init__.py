"""Local stand-ins for services the tests cannot reach from here (never used outside the tests)."""
