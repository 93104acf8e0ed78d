"""The study export (results/<study>/<run>/): its schema, its writer, its reader and the trials' predictions."""
