"""Common platform of the Routines services: settings, logging, database, bus, HTTP, domain maths."""
