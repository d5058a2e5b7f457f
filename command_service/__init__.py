"""The write side: command validation, the event-sourced application, the REST writes, the relay."""
