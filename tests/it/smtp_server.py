"""A real SMTP server for the notification tests: aiosmtpd (Debian's python3-aiosmtpd),
on a loopback port, requiring AUTH (user "dynip", password "s3cret pw") without TLS.
Each message goes into DIR as NNNN.eml, with its envelope recipients in NNNN.rcpt.
Prints "listening PORT" once it accepts connections."""

import os
import socket
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Keep:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "%04d" % self.count)
        with open(base + ".rcpt", "w") as out:
            out.write("\n".join(envelope.rcpt_tos))
        with open(base + ".tmp", "wb") as out:
            out.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    if (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"dynip"
        and auth_data.password == b"s3cret pw"
    ):
        return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


def main():
    directory = sys.argv[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(
        Keep(directory),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    print("listening %d" % port, flush=True)
    while True:
        time.sleep(3600)


main()
