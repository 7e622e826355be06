"""Pipeline steps: each maps an iterator of documents to an iterator of documents."""
