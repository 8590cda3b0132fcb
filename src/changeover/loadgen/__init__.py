"""Load generation: a minimal keep-alive HTTP/1.1 client today; the open-model generator later."""
