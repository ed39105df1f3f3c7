"""The run dispatcher: concurrency policies, execution issues, wake-ups."""
