"""Server-rendered patient pages: connect, status, disconnect."""
