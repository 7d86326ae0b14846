"""The stream service: Kafka I/O, batching, transactional checkpoints, rebalances, metrics."""
