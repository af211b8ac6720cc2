"""A local SMTP server that stores mail in a folder, for development and tests.

Every message it accepts becomes one `.eml` file named after its Message-ID, so a message
that is sent again replaces its earlier copy instead of adding a second file. It performs
no authentication and accepts mail from anyone who can connect, so bind it to a loopback
address or a private container network only.
"""

import asyncio
import hashlib
import re
import signal
import uuid
import weakref
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from shared.files import write_atomically

logger = structlog.get_logger(__name__)

# Longer Message-IDs are cut so that the file name stays under the 255-byte limit of common
# file systems, with room for the hash suffix and the temporary-file decoration.
FILE_STEM_MAX_CHARS = 150

# Host name the catcher announces in its SMTP greeting. A fixed name avoids aiosmtpd's
# default, socket.getfqdn(), which can block on a DNS lookup for every connection.
CATCHER_HOST_NAME = "orderflow-mail-catcher"

_UNSAFE_FILE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._@+=-]")
_MESSAGE_ID_HASH_CHARS = 16


class EmlFileHandler:
    """aiosmtpd handler that writes each received message to `<folder>/<name>.eml`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Store the message and return the SMTP reply for the DATA command."""
        content = envelope.original_content or b""
        try:
            path = await asyncio.to_thread(self.store, content)
        except OSError as exc:
            logger.exception(
                "mail catcher failed to store a message", folder=str(self.folder), error=str(exc)
            )
            return "451 Requested action aborted: could not store the message"

        logger.info("mail catcher stored a message", file=path.name)
        return "250 Message accepted for delivery"

    def store(self, content: bytes) -> Path:
        """Write the raw message to the folder, replacing any file with the same Message-ID."""
        # The compat32 policy returns the raw header text without parsing it.
        message_id = BytesHeaderParser(policy=compat32).parsebytes(content).get("Message-ID")
        file_name = eml_file_name(None if message_id is None else str(message_id))
        path = self.folder / file_name
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(path, content)
        return path


def eml_file_name(message_id: str | None) -> str:
    """Return the `.eml` file name for a message with the given Message-ID.

    The name keeps the Message-ID's letters, digits and `._@+=-`, so the Message-ID
    `<order-confirmation.ORD-1@orderflow.local>` gives the file name
    `order-confirmation.ORD-1@orderflow.local.eml`.
    When anything else had to be replaced or cut, a hash of the whole Message-ID is appended,
    so distinct Message-IDs keep distinct names. A missing or blank Message-ID gives a new
    unique name on every call.
    """
    stripped = (message_id or "").strip()
    if stripped.startswith("<") and stripped.endswith(">"):
        stripped = stripped[1:-1]
    if not stripped:
        return f"no-message-id-{uuid.uuid4().hex}.eml"

    stem = _UNSAFE_FILE_NAME_CHARACTERS.sub("_", stripped)[:FILE_STEM_MAX_CHARS]
    if stem.startswith("."):
        stem = "_" + stem[1:]
    if stem != stripped:
        digest = hashlib.sha256(stripped.encode("utf-8", "surrogateescape")).hexdigest()
        stem = f"{stem}-{digest[:_MESSAGE_ID_HASH_CHARS]}"
    return f"{stem}.eml"


class MailCatcher:
    """SMTP server on the running event loop that stores messages with EmlFileHandler."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._handler = EmlFileHandler(folder)
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def port(self) -> int:
        """TCP port the server listens on, including the one the system picked for port 0."""
        if self._server is None:
            raise RuntimeError("the mail catcher is not running: call start() first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        """Start listening on host:port, where port 0 picks a free port (see `port`).

        Raises OSError when the address cannot be bound, for example because the port is
        already in use.
        """
        if self._server is not None:
            raise RuntimeError("the mail catcher is already running: call stop() first")

        self.folder.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._create_connection, host, port)
        logger.info("mail catcher started", host=host, port=self.port, folder=str(self.folder))

    async def stop(self) -> None:
        """Stop listening and close the open connections. Calling it again does nothing."""
        if self._server is None:
            return

        server, self._server = self._server, None
        server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        await server.wait_closed()
        logger.info("mail catcher stopped")

    def _create_connection(self) -> SMTP:
        connection = SMTP(
            self._handler,
            hostname=CATCHER_HOST_NAME,
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )
        self._connections.add(connection)
        return connection


def run_catcher(host: str, port: int, folder: Path) -> None:
    """Run the mail catcher until the process receives SIGINT or SIGTERM, then stop it."""
    asyncio.run(_serve_until_stopped(host, port, folder))


async def _serve_until_stopped(host: str, port: int, folder: Path) -> None:
    catcher = MailCatcher(folder)
    await catcher.start(host, port)

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for stop_signal in stop_signals:
        loop.add_signal_handler(stop_signal, stop_requested.set)
    try:
        await stop_requested.wait()
    finally:
        for stop_signal in stop_signals:
            loop.remove_signal_handler(stop_signal)
        await catcher.stop()
