//! SMTP ingest: the listener, one file per protocol step.
