"""The API service: routines management, directory, issues, authorization."""
