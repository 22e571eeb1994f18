"""The Thing model: affordances, schemas and values. No trio, no JSON text, no sockets."""
