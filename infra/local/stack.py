#!/usr/bin/env python3
"""Local AWS stack for the card-lookup project: DynamoDB Local + the moto SNS server.

Standard library only. Everything it installs or writes lives under <root>/.local/
(git-ignored); every service listens on 127.0.0.1 only.

    stack.py install                         install pinned tools (fast no-op when done)
    stack.py up [options]                    start the stack, print "READY {json}", wait
    stack.py exec [options] -- CMD ARGS...   start the stack, run CMD against it, stop it
    stack.py sms [--endpoint URL] [--phone P] [--json] [--state-file F]
    stack.py status [--state-file F]
    stack.py down [--state-file F]

The entry point only: the launcher is the `localstack` package beside this file
(install, supervise, java, cli). See infra/local/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localstack.cli import main  # noqa: E402  (needs the path above)

if __name__ == "__main__":
    sys.exit(main())
