"""Delivery channels: email (SMTP), Slack, and files in an outbox folder, behind one small protocol."""
