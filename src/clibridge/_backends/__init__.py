"""Backend drivers: per CLI, the pure protocol code and the worker that runs it.

``claude`` -- the stream-json protocol (argv, stdin lines, parser, turn translation);
``claude_worker`` -- :class:`ClaudeWorker`, the pool's worker on top of it.
"""
