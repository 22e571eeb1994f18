"""The server's runtime: commands run against Things, and actions run as tasks."""
