"""Pure online drift detection: no Kafka, no files, no implicit clocks."""
