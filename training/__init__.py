"""Model training: MTP heads (`mtp_trainer`, the loop; `mtp_corpus`, the data; `mtp_run`, one `edit model
train-mtp` run end to end). Uses `decoding` and `editor`; neither imports it."""
