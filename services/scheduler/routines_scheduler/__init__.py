"""The scheduler: fires schedule triggers exactly once per slot."""
