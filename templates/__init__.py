"""Jinja2 templates and CSS of the rendered digests (packaged as ``notifier.templates``)."""
