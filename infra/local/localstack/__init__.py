"""The local AWS stack behind `infra/local/stack.py` (standard library only):

- `common`: layout, pins, errors, HTTP and process helpers;
- `java`: DynamoDB Local on Java (the loopback launcher and its command line);
- `install`: `stack.py install`, the pinned tools under .local/;
- `supervise`: the running stack (services, API, state file, stopping);
- `cli`: the command line.
"""
