"""The trio master server: connections, projects, the event loop, allocation, budgets."""
