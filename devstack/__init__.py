"""The local stack: the whole platform on one machine, for ``extctl dev``, the tests and the benchmarks.

A part of the platform, not of the CLI: it imports the app, the runner and moto, so callers import it
only when they start a stack (``extctl dev`` does so lazily).

- :mod:`devstack.stack`: :class:`~devstack.stack.LocalStack` starts moto, the API, the runner and the
  finalize pump on 127.0.0.1, from a :class:`~devstack.stack.StackConfig` it is given;
- :mod:`devstack.aws`: moto's server, with DynamoDB's one-request-at-a-time semantics;
- :mod:`devstack.provision`: the bucket, queue, tables and KMS key the platform expects;
- :mod:`devstack.servers`: the API's HTTP server (Chalice's local server);
- :mod:`devstack.pump`: SQS messages to the finalize worker, as Lambda's SQS trigger delivers them;
- :mod:`devstack.ports`: free and busy ports.
"""
