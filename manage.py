#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] == ["runplatform"]:
        # `make run` on a fresh checkout: create var/secret_key (random, 0600) before the
        # settings read it; every other command refuses to start without a key.
        from config.env import load_dotenv
        from edge.crypto import create_key_file, key_file

        load_dotenv()
        if not os.environ.get("DJANGO_SECRET_KEY") and create_key_file(key_file(os.environ)):
            print(f"a new random secret key was written to {key_file(os.environ)}; keep it "
                  "(it encrypts the device secrets)", flush=True)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
