"""Public testing helpers: the seeded synthetic world and small fixtures."""
