from kubenas.storage.base import (AlreadyExists, NotFound, ObjectStore, PreconditionFailed,
                                  StorageError, open_store)

__all__ = ["AlreadyExists", "NotFound", "ObjectStore", "PreconditionFailed", "StorageError",
           "open_store"]
