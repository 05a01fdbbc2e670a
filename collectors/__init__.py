"""Telemetry collectors: decoding and validating telemetry (records, columnar batches, gNMI),
windowing it into series, and the checkpointed consumer-group service that does both on a bus."""
