"""The projector: consumes task events from RabbitMQ and keeps the indexed read table."""
