"""What the suite does in its own process to run fast, none of which changes what is tested.

Imported by tests/conftest.py before any application is built:

* argon2id at the library's recommended parameters costs about 0.1 s of CPU per hash and per
  check, by design; tests create users and sign in by the thousand. In this process it runs
  with its cheapest parameters (still argon2id: hashes, checks and rehash-on-login behave the
  same). Servers the tests start as processes (``merit serve``) keep the real parameters, and
  tests/unit/test_passwords.py checks that the server's are the recommended ones.
* Flask compiles every URL rule for every application (werkzeug parses it with regular
  expressions and builds a URL builder function with ast and compile()): about 0.2 s for
  each of the thousands of applications the tests create. What a rule compiles to depends
  only on its text, defaults and the map's settings and converters, so it is compiled once
  per process and the result is shared (the converters too: werkzeug's own keep nothing of
  their map). Jinja's compiled templates are shared the same way, through its bytecode
  cache (which checks them against the source).
"""

from __future__ import annotations

import jinja2
from argon2 import PasswordHasher
from flask import Flask
from werkzeug.routing import Rule

from server.auth import passwords

REAL_PASSWORD_HASHER = passwords._hasher
passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

_werkzeug_compile = Rule.compile
_compiled: dict = {}


def _compile_once(self: Rule) -> None:
    key = (
        self.rule,
        self.subdomain,
        self.host,
        self.merge_slashes,
        self.map.host_matching,
        repr(sorted((self.defaults or {}).items())),
        tuple(sorted((name, id(kind)) for name, kind in self.map.converters.items())),
    )
    done = _compiled.get(key)
    if done is None:
        _werkzeug_compile(self)
        _compiled[key] = (
            self._parts,
            self._trace,
            self._converters,
            set(self.arguments),
            self._build.__func__,
            self._build_unknown.__func__,
        )
        return
    parts, trace, converters, arguments, build, build_unknown = done
    self._parts, self._trace, self._converters = list(parts), list(trace), dict(converters)
    self.arguments = set(arguments)
    self._build = build.__get__(self, None)
    self._build_unknown = build_unknown.__get__(self, None)


Rule.compile = _compile_once  # type: ignore[method-assign]


class _SharedTemplateCode(jinja2.BytecodeCache):
    """Compiled templates kept in memory for every application of this process."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


Flask.jinja_options = {**Flask.jinja_options, "bytecode_cache": _SharedTemplateCode()}
