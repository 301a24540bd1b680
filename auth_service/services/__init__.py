"""Plain-Python use cases behind the routes: tenants, keys, provider configs, launches, connections, audit."""
