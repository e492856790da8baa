"""Demo inputs for the local environment: generated uploads, signed order events and analytics events."""
