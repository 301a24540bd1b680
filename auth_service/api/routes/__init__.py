"""One router per area: SMART flows, admin API, JWKS, patient pages."""
