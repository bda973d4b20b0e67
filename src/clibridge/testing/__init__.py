"""Test harness that ships with clibridge: fake CLIs and loopback model stubs.

Users test their own setups with these; clibridge's own suite is built on them.
"""
